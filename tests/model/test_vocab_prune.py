"""Vocabulary pruning: the pruned directory is smaller, every kept token keeps its string under its new
id, the model computes on the corpus's texts what the full one did, and every command takes it."""

from __future__ import annotations

import json

import pytest
import torch

import lmforge
from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.model.hf import export_hf
from lmforge.model.vocab_prune import prune_vocabulary
from tests.finetune.conftest import _one_thread, base_dir, ft_layers, reviews_small, tokenizer_file  # noqa: F401


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, base_dir, reviews_small):
    out = tmp_path_factory.mktemp("prune") / "cls"
    finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, epochs=1, method="lora",
                                             lora={"embedding_rank": 2}), source="t"))
    return out


def _texts(data) -> list[str]:
    return [json.loads(line)["text"] for split in ("train", "validation", "test")
            for line in open(data / f"{split}.jsonl", encoding="utf-8")]


def test_pruned_model_keeps_its_predictions_and_ids_and_is_smaller(classifier, reviews_small, tmp_path, capsys):
    texts = _texts(reviews_small)
    assert main(["compress", "--model", str(classifier), "--out", str(tmp_path / "small"),
                 "--vocab-from", str(reviews_small)]) == 0
    assert "vocabulary" in capsys.readouterr().out
    full, small = lmforge.load(classifier), lmforge.load(tmp_path / "small")
    assert small.model.config.vocab_size < full.model.config.vocab_size
    assert (tmp_path / "small" / "model.safetensors").stat().st_size < (classifier / "model.safetensors").stat().st_size
    for text in texts[:40]:  # the same token strings, new ids, the same answer
        a, b = full.tokenizer.encode(text), small.tokenizer.encode(text)
        assert a.tokens == b.tokens
        assert [small.tokenizer.id_to_token(i) for i in b.ids] == [full.tokenizer.id_to_token(i) for i in a.ids]
    got, want = small.class_probabilities(texts[:40]), full.class_probabilities(texts[:40])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    special = {k: small.tokenizer.id_to_token(v) for k, v in small.special.items() if v is not None}
    assert special == {k: full.tokenizer.id_to_token(v) for k, v in full.special.items() if v is not None}
    kept = set(small.tokenizer.get_vocab())
    dropped = [t for t in full.tokenizer.get_vocab() if t not in kept and not t.startswith("##") and len(t) == 1]
    assert dropped  # a character the corpus never uses: [UNK] now, itself before
    assert small.tokenizer.encode(dropped[0]).ids[1] == small.tokenizer.token_to_id("[UNK]")
    assert full.tokenizer.encode(dropped[0]).tokens[1] == dropped[0]
    export_hf(tmp_path / "small", tmp_path / "hf")  # the pruned directory exports like any other
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([small.tokenizer.encode(texts[0]).ids])
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, small.model.classify(ids), rtol=0, atol=1e-5)


def test_nothing_pruned_changes_nothing_and_bpe_is_refused(classifier, reviews_small, tmp_path):
    full = lmforge.load(classifier)
    counts = prune_vocabulary(classifier, [], tmp_path / "same", keep_ids=range(full.tokenizer.get_vocab_size()))
    assert counts["kept"] == counts["of"]
    same = lmforge.load(tmp_path / "same")
    a, b = full.model.state_dict(), same.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "same" / "tokenizer.json").read_text())["model"]["vocab"] == \
        json.loads((classifier / "tokenizer.json").read_text())["model"]["vocab"]
    texts = _texts(reviews_small)[:20]
    torch.testing.assert_close(same.class_probabilities(texts), full.class_probabilities(texts), rtol=0, atol=0)
    spec = json.loads((classifier / "tokenizer.json").read_text())
    (tmp_path / "bpe").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "bpe" / name).write_bytes((classifier / name).read_bytes())
    spec["model"]["type"] = "BPE"
    (tmp_path / "bpe" / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError):
        prune_vocabulary(tmp_path / "bpe", texts, tmp_path / "x")
