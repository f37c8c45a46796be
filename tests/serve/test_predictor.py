"""lmforge.load(DIR) -> Predictor: each task against the model computed by hand, batching invariance,
KV-cached generation equal to uncached, stop at end-of-text, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import lmforge
from lmforge.serve.predictor import InputError
from tests.serve.conftest import TAGS, review_texts


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return review_texts(40)


def test_import_lmforge_stays_light():
    code = "import sys, lmforge; assert callable(lmforge.load); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_classify_matches_the_model_and_is_batch_invariant(serve_models, texts):
    p = lmforge.load(serve_models["classifier"], batch_size=7)
    assert p.tasks == ("classify", "fill_mask", "embed")
    batched = p.classify(texts)
    enc = p.tokenizer.encode(texts[3])
    with torch.no_grad():
        probs = p.model.classify(torch.tensor([enc.ids])).softmax(-1)[0]
    assert batched[3]["label"] == p.labels[int(probs.argmax())]
    assert batched[3]["scores"]["positive"] == pytest.approx(float(probs[1]), abs=1e-5)
    assert {r["label"] for r in batched} <= {"negative", "positive"}
    for text, answer in zip(texts[:5], batched[:5]):  # alone (no padding) == in a padded, sorted batch
        single = p.classify(text)
        assert single["label"] == answer["label"] and single["score"] == pytest.approx(answer["score"], abs=1e-5)
    long = " ".join(texts)  # longer than max_positions: truncated, not an error
    assert p.classify(long)["label"] in p.labels


def test_embed_and_fill_mask(serve_models, texts):
    p = lmforge.load(serve_models["classifier"])
    vecs = p.embed(texts[:6])
    assert len(vecs) == 6 and all(len(v) == 32 for v in vecs)
    torch.testing.assert_close(torch.tensor(p.embed(texts[2])), torch.tensor(vecs[2]), rtol=0, atol=1e-5)
    unit = torch.tensor(p.embed(texts[:3], normalize=True))
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(3))

    answers = p.fill_mask("这个 [MASK] 很 好 ， [MASK] 不错", top_k=3)
    assert len(answers) == 2 and all(len(a) == 3 for a in answers)
    enc = p.tokenizer.encode("这个 [MASK] 很 好 ， [MASK] 不错")
    ids = torch.tensor([enc.ids])
    with torch.no_grad():
        logits = p.model.mlm(p.model.backbone(ids), ids == p.special["mask"])
    assert [a[0]["id"] for a in answers] == logits.argmax(-1).tolist()
    assert answers[0][0]["score"] >= answers[0][1]["score"] >= answers[0][2]["score"]
    with pytest.raises(InputError, match=r"has no \[MASK\] token"):
        p.fill_mask("没有 掩码")


def test_tag_gives_one_label_per_word(serve_models, texts):
    p = lmforge.load(serve_models["tagger"], batch_size=4)
    assert p.tasks == ("tag", "embed")
    tagged = p.tag(texts[:9])
    for text, words in zip(texts[:9], tagged):
        assert words and all(w["label"] in TAGS for w in words)
        assert all(text[w["start"]:w["end"]] == w["word"] for w in words)
        assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert p.tag(texts[4]) == tagged[4]


def test_generate_cached_equals_uncached_and_stops_at_end_of_text(serve_models):
    p = lmforge.load(serve_models["decoder"])
    assert p.tasks == ("generate",)
    prompt = "这个手机"
    for kwargs in ({"temperature": 0.0}, {"temperature": 0.9, "top_k": 20, "top_p": 0.9, "seed": 7}):
        cached = p.generate(prompt, max_new_tokens=20, use_cache=True, **kwargs)
        plain = p.generate(prompt, max_new_tokens=20, use_cache=False, **kwargs)
        assert cached["tokens"] == plain["tokens"] and len(cached["tokens"]) > 0
    assert p.generate(prompt, 10, 0.9, 0, 1.0, seed=3) == p.generate(prompt, 10, 0.9, 0, 1.0, seed=3)
    # the position table bounds the length: 64 positions, the prompt's tokens, then at most the rest
    long = p.generate(prompt, max_new_tokens=500, temperature=0.0)
    assert long["prompt_tokens"] + len(long["tokens"]) <= 64

    eos = p.special["eos"]
    with torch.no_grad():  # make end-of-text the only likely token: generation must stop at once
        norm = p.model.backbone.final_norm
        norm.weight.zero_()
        norm.bias.copy_(p.model.backbone.embed.tokens.weight[eos] * 50)
    assert p.generate(prompt, max_new_tokens=10, temperature=0.0) == {"text": "", "tokens": [],
                                                                      "prompt_tokens": len(p.tokenizer.encode(prompt, add_special_tokens=False).ids)}


def test_clear_errors(serve_models):
    p = lmforge.load(serve_models["decoder"])
    with pytest.raises(InputError, match="does not support 'classify'; it supports: generate"):
        p.classify("好")
    with pytest.raises(InputError, match="empty text"):
        p.generate("   ")
    with pytest.raises(InputError, match="top_p"):
        p.generate("好", top_p=0.0)
    c = lmforge.load(serve_models["classifier"])
    with pytest.raises(InputError, match="expected text as a string, got int"):
        c.classify(["好", 3])
    with pytest.raises(InputError, match="lone surrogate U\\+D800"):
        c.classify(["好", "bad \ud800 text"])
    with pytest.raises(InputError, match="no visible characters"):
        c.embed(["\x00\u200b\x07"])


def test_batches_group_similar_lengths(serve_models):
    p = lmforge.load(serve_models["classifier"], batch_size=4)
    lengths = [10, 120, 11, 12, 10, 13, 11, 60]
    batches = p._batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each text exactly once
    assert all(len(b) <= 4 for b in batches)
    assert [1] in batches and [7] in batches  # the long texts do not make the short ones pad
    for b in batches:
        padded, real = max(lengths[i] for i in b) * len(b), sum(lengths[i] for i in b)
        assert padded <= 1.25 * real


def test_a_pretrain_output_directory_loads(tmp_path, serve_models):
    """`lmforge pretrain` writes config.json (heads, model, objective, tokenizer meta) + save_model weights."""
    import json
    import shutil

    from safetensors.torch import save_model

    from lmforge.model.heads import LanguageModel
    from tests.serve.conftest import tiny_config

    tok = json.loads((serve_models["classifier"] / "config.json").read_text())["model"]["vocab_size"]
    model = LanguageModel(tiny_config(tok), ("mlm", "sentence")).eval()
    save_model(model, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "format_version": 1, "architecture": "lmforge.LanguageModel", "heads": ["mlm", "sentence"],
        "model": model.config.model_dump(mode="json"), "objective": {"kind": "mlm+nsp"}, "tokenizer": {}}))
    shutil.copyfile(serve_models["classifier"] / "tokenizer.json", tmp_path / "tokenizer.json")
    p = lmforge.load(tmp_path)
    assert p.tasks == ("fill_mask", "embed")
    ids = torch.tensor([p.tokenizer.encode("质量 好").ids])
    with torch.no_grad():
        expected = model.backbone(ids).mean(dim=1)[0]
    torch.testing.assert_close(torch.tensor(p.embed("质量 好")), expected, rtol=0, atol=1e-5)


def test_tag_covers_long_texts_in_overlapping_windows(serve_models, texts):
    """A text longer than the window is tagged in overlapping windows: every word of the text gets a
    label (nothing cut off), and a text that fits one window gets the same answer as without windows."""
    wide = lmforge.load(serve_models["tagger"])
    narrow = lmforge.load(serve_models["tagger"], max_length=6)  # 4 content tokens per window
    long_text = max(texts, key=len)
    n_tokens = len(narrow._untruncated.encode(long_text, add_special_tokens=False).ids)
    assert n_tokens > 3 * 4
    words = narrow.tag(long_text)
    assert "".join(w["word"] for w in words) == "".join(long_text.split())
    assert all(w["label"] in TAGS for w in words)
    short = long_text[:3]  # three characters: one window of either size
    assert narrow.tag(short) == wide.tag(short)
    # the windows' words are the untruncated text's words, in order
    fits = len(wide._untruncated.encode(long_text).ids) <= wide.max_length
    if fits:
        assert [(w["start"], w["end"]) for w in words] == [(w["start"], w["end"]) for w in wide.tag(long_text)]
