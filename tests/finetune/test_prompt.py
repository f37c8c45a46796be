"""Prompt-based fine-tuning through the MLM head (PET / LM-BFF): the template encoding (only the texts are
cut, the mask survives, a typed mask is not a second one), the verbalizer head reading exactly the
pretrained MLM head's scores of the label words, fine-tuning end to end (also continued, pruned, distilled
and self-trained), and a one-line error for each way a prompt can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lmforge
from lmforge.config import ConfigError
from lmforge.finetune.data import encoding_tokenizer
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.model.modeldir import load_model_dir
from lmforge.model.vocab_prune import prune_vocabulary
from lmforge.serve.predictor import Predictor
from lmforge.tokenize.prompt import PromptTemplate
from tests.finetune.conftest import ft_layers

TEMPLATE = "{text}总之很[MASK]。"
WORDS = {"positive": "好", "negative": "差"}
PROMPT = {"prompt": {"template": TEMPLATE, "verbalizer": WORDS}}


def _texts(data: Path, split: str = "test") -> list[str]:
    return [json.loads(line)["text"] for line in open(data / f"{split}.jsonl", encoding="utf-8")]


@pytest.fixture(scope="module")
def prompted(tmp_path_factory, base_dir, reviews_small) -> Path:
    out = tmp_path_factory.mktemp("prompted") / "model"
    finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, epochs=2), PROMPT, source="t"))
    return out


def test_only_the_texts_are_cut_and_the_mask_always_survives(tokenizer_file, reviews_small):
    tok = encoding_tokenizer(tokenizer_file)
    template = PromptTemplate(TEMPLATE)
    texts = _texts(reviews_small, "train")
    long = "".join(texts * 20)  # ~100k characters: linear work (a text is tokenized once alone, once inside)
    mask_id = tok.token_to_id("[MASK]")
    literal = tok.encode("总之很", add_special_tokens=False).ids + [mask_id] + tok.encode("。", add_special_tokens=False).ids
    for truncation in ("head", "head+tail"):
        for text in (texts[0], long):
            (p,) = template.encode(tok, [text], None, 24, truncation)
            ids = p.ids
            assert ids.count(mask_id) == 1
            assert ids[0] == tok.token_to_id("[CLS]") and ids[-1] == tok.token_to_id("[SEP]")
            assert ids[-1 - len(literal):-1] == literal  # the template, whole, right before [SEP]
            assert p.template_mask == [1] + [0] * (len(ids) - 2 - len(literal)) + [1] * (len(literal) + 1)
            content = ids[1:-1 - len(literal)]
            whole = tok.encode(text, add_special_tokens=False).ids
            if text is long:
                assert len(ids) == 24  # the room is used to the last token
            if len(whole) <= len(content):
                assert content == whole
            elif truncation == "head":
                assert content == whole[:len(content)]
            else:  # the first quarter of the room and the last three quarters
                head = round(len(content) * 0.25)
                assert content == whole[:head] + whole[len(whole) - (len(content) - head):]


def test_a_typed_mask_is_not_a_second_one_and_pairs_are_cut_longest_first(tokenizer_file, reviews_small):
    tok = encoding_tokenizer(tokenizer_file)
    mask_id = tok.token_to_id("[MASK]")
    template = PromptTemplate(TEMPLATE)
    (typed,) = template.encode(tok, ["这个[MASK]不错"], None, 32)
    (unknown,) = template.encode(tok, ["这个[UNK]不错"], None, 32)
    assert typed.ids.count(mask_id) == 1 and typed.ids == unknown.ids
    short, long = _texts(reviews_small)[0][:6], "".join(_texts(reviews_small)[:10])
    pair = PromptTemplate("{text}?[MASK],{pair}")
    (q,) = pair.encode(tok, [long], [short], 32)
    short_ids = tok.encode(short, add_special_tokens=False).ids
    assert len(q.ids) == 32 and q.ids.count(mask_id) == 1
    assert q.ids[-1 - len(short_ids):-1] == short_ids  # the short side whole, the long one cut
    assert sum(1 - m for m in q.template_mask) == 32 - 2 - 3  # all but [CLS], [SEP], "?", [MASK], ","
    with pytest.raises(ValueError, match=r"\{pair\}"):
        pair.encode(tok, [long], None, 32)
    for bad in ("{text} no mask", "[MASK] only", "{text}[MASK][MASK]", "{text}{text}[MASK]"):
        with pytest.raises(ValueError, match="prompt template"):
            PromptTemplate(bad)


def test_a_sentencepiece_tokenizer_reads_the_template_as_running_text(reviews_small, tmp_path):
    """Unigram marks each word start; tokenized piece by piece, the template would gain marks that running
    text never has. The filled template is tokenized whole, and a label word loses its lone start mark."""
    from lmforge.config import build_config
    from lmforge.tokenize.config import TokenizerTrainConfig
    from lmforge.tokenize.prompt import verbalizer_ids
    from lmforge.tokenize.tokenizer import build_tokenizer

    cfg = build_config(TokenizerTrainConfig, {"kind": "unigram", "vocab_size": 2000, "progress": False}, source="t")
    tok, trainer = build_tokenizer(cfg)
    tok.train_from_iterator(_texts(reviews_small, "train"), trainer)
    text = _texts(reviews_small)[0]
    from lmforge.tokenize.tokenizer import special_token_ids

    template = PromptTemplate(TEMPLATE)
    (p,) = template.encode(tok, [text], None, 128)
    mask_token = tok.id_to_token(special_token_ids(tok)["mask"])
    assert p.ids == tok.encode(template.fill(text, None, mask_token)[0]).ids
    good, bad = verbalizer_ids(tok, WORDS, ["positive", "negative"])
    assert tok.id_to_token(good).lstrip("▁") == "好" and tok.id_to_token(bad).lstrip("▁") == "差"


def test_before_training_the_head_is_the_pretrained_mlm_on_the_label_words(base_dir, reviews_small, tmp_path):
    """Zero steps: the classifier's probabilities are the MLM head's softmax over the two label words at
    the template's mask, as fill_mask of the pretrained model reads them."""
    from lmforge.finetune.build import build_finetune_model, prompt_token_ids
    from lmforge.model.modeldir import LoadedModel, model_dir_config, read_json

    config = make_finetune_config(*ft_layers(tmp_path, base_dir, reviews_small), PROMPT, source="t")
    tok = encoding_tokenizer(base_dir)
    labels = ["negative", "positive"]
    model = build_finetune_model(config, read_json(base_dir / "config.json")["model"], labels,
                                 verbalizer=prompt_token_ids(config, tok, labels)).eval()
    base = lmforge.load(base_dir)
    loaded = LoadedModel(model, base_dir_tokenizer(base_dir), model_dir_config(model, prompt=PROMPT["prompt"]), labels)
    texts = _texts(reviews_small)[:6]
    ours = Predictor(loaded).class_probabilities(texts)  # (6, 2)
    words = [tok.token_to_id(WORDS[name]) for name in labels]
    for text, row in zip(texts, ours):
        (fill,) = base.fill_mask(TEMPLATE.replace("{text}", text), top_k=base.model.config.vocab_size)
        score = {c["id"]: c["score"] for c in fill}
        theirs = torch.tensor([score[w] for w in words])
        torch.testing.assert_close(row, theirs / theirs.sum(), rtol=0, atol=1e-5)


def base_dir_tokenizer(path: Path):
    from lmforge.tokenize.tokenizer import load_tokenizer

    return load_tokenizer(path / "tokenizer.json")


def test_a_prompt_based_model_records_its_prompt_and_prunes_its_vocabulary_exactly(prompted, reviews_small, tmp_path):
    config = json.loads((prompted / "config.json").read_text(encoding="utf-8"))
    assert config["prompt"]["template"] == TEMPLATE and config["prompt"]["verbalizer"] == WORDS
    assert config["heads"] == ["mlm"] and "pooling" not in config
    texts = _texts(reviews_small)
    full = lmforge.load(prompted).class_probabilities(texts)
    counts = prune_vocabulary(prompted, texts[:10], tmp_path / "small")  # test texts beyond these lose tokens
    assert counts["kept"] < counts["of"]
    small = lmforge.load(tmp_path / "small")
    torch.testing.assert_close(small.class_probabilities(texts[:10]), full[:10], rtol=0, atol=1e-6)
    pruned = json.loads((tmp_path / "small" / "config.json").read_text(encoding="utf-8"))["prompt"]
    tok = small.tokenizer
    assert [tok.id_to_token(i) for i in pruned["label_token_ids"]] == [WORDS["negative"], WORDS["positive"]]


def test_continuing_a_prompt_based_model_keeps_reading_through_its_prompt(prompted, reviews_small, tmp_path):
    """init_from a prompt-based classifier: its template and verbalizer, unless the config gives others; a
    pruned copy distils from it (the teacher and the student read the same prompted batches)."""
    out = tmp_path / "more"
    finetune(make_finetune_config(*ft_layers(out, prompted, reviews_small, epochs=1), source="t"))
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["prompt"]["template"] == TEMPLATE
    from lmforge.finetune.compress import compress

    compress(str(prompted), str(tmp_path / "pruned"), layers=1)
    student = tmp_path / "student"
    finetune(make_finetune_config(*ft_layers(student, tmp_path / "pruned", reviews_small, epochs=1),
                                  {"distill": {"teacher": str(prompted)}}, source="t"))
    assert load_model_dir(student).model.head.__class__.__name__ == "VerbalizerHead"
    with pytest.raises(ConfigError, match="prompt template"):  # a plain student cannot read a prompted teacher's batches
        finetune(make_finetune_config(*ft_layers(tmp_path / "plain", tmp_path / "pruned", reviews_small, epochs=1),
                                      {"pooling": "mean", "distill": {"teacher": str(prompted)}}, source="t"))


def test_self_training_through_a_prompt(base_dir, reviews_small, tmp_path):
    out = tmp_path / "st"
    threshold = 0.52
    finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, epochs=1), PROMPT,
                                  {"self_training": {"unlabelled": str(reviews_small), "threshold": threshold}}, source="t"))
    for part in (out, out / "self-training" / "round-0", out / "self-training" / "round-1"):
        assert json.loads((part / "config.json").read_text(encoding="utf-8"))["prompt"]["template"] == TEMPLATE
    info = json.loads((out / "config.json").read_text(encoding="utf-8"))["report_info"]["self_training"]
    held = set(_texts(reviews_small, "validation")) | set(_texts(reviews_small))
    texts = [t for t in _texts(reviews_small, "train") if t not in held]
    first = lmforge.load(out / "self-training" / "round-0")  # reads through the template
    assert info["pseudo_labelled"] == [int((first.class_probabilities(texts).max(-1).values >= threshold).sum())]


@pytest.mark.parametrize("over, match", [
    ({"prompt": {"template": TEMPLATE, "verbalizer": {"positive": "好", "negative": "差劲极了"}}},
     r"'negative' -> '差劲极了' is \d+ tokens"),
    ({"prompt": {"template": TEMPLATE, "verbalizer": {"positive": "好"}}}, r"no word for label\(s\) \['negative'\]"),
    ({"prompt": {"template": TEMPLATE, "verbalizer": {"positive": "好", "negative": "好"}}}, "share a token"),
    ({"prompt": {"template": "{text}总之很好", "verbalizer": WORDS}}, r"needs \[MASK\] exactly once"),
    ({"prompt": {"verbalizer": WORDS}}, "prompt.verbalizer: label words need prompt.template"),
    ({"prompt": {"template": TEMPLATE}}, "prompt.verbalizer: give each label its word"),
    ({**PROMPT, "task": "multilabel"}, "task=multilabel"),
    ({**PROMPT, "pooling": "mean"}, "pooling=mean"),
    ({**PROMPT, "method": "lora", "lora": {"embedding_rank": 2}}, "lora.embedding_rank"),
    ({**PROMPT, "init_from": None, "model": {"vocab_size": 700}, "tokenizer": "x.json"}, "give init_from"),
    ({"prompt": {"template": TEMPLATE, "verbalizer": {"positive": "好", "negative": "[UNK]"}}}, "unknown or special"),
])
def test_each_wrong_prompt_is_one_line_before_training(over, match, base_dir, reviews_small, tmp_path):
    with pytest.raises((ConfigError, ValueError), match=match) as raised:
        finetune(make_finetune_config(*ft_layers(tmp_path / "x", base_dir, reviews_small), over, source="t"))
    assert "\n" not in str(raised.value).strip() and not (tmp_path / "x" / "model.safetensors").exists()


def test_a_prompt_needs_an_mlm_head(decoder_base_dir, reviews_small, tmp_path):
    with pytest.raises(ConfigError, match="has no MLM head"):
        finetune(make_finetune_config(*ft_layers(tmp_path / "x", decoder_base_dir, reviews_small), PROMPT, source="t"))


def test_cli_prompt_overrides_train_a_model_that_predicts_through_its_template(base_dir, reviews_small, tmp_path, capsys):
    from lmforge.cli import main

    out = tmp_path / "cli"
    assert main(["finetune", "--init-from", str(base_dir), "--data", str(reviews_small), "--out", str(out),
                 "--no-progress", "epochs=1", "data.max_length=32", "train.tensorboard=false", "train.device=cpu",
                 f"prompt.template={TEMPLATE}", "prompt.verbalizer={positive: 好, negative: 差}"]) == 0
    capsys.readouterr()
    text = _texts(reviews_small)[0]
    assert main(["predict", "--model", str(out), "--json", text]) == 0
    answer = json.loads(capsys.readouterr().out.splitlines()[-1])["classify"]
    assert answer == lmforge.load(out).classify(text)
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["prompt"]["verbalizer"] == WORDS


def test_label_words_of_numeric_labels(base_dir, reviews_small, tmp_path):
    config = make_finetune_config(*ft_layers(tmp_path, base_dir, reviews_small),
                                  {"prompt": {"template": TEMPLATE, "verbalizer": {0: "差", 1: "好"}}}, source="t")
    assert config.prompt.verbalizer == {"0": "差", "1": "好"}  # labels are read as strings


def test_text_pairs_through_a_prompt_train_predict_and_serve(base_dir, reviews_small, tmp_path):
    """Question matching from real reviews (first half, its own second half or another's): the template
    holds both texts; the report, the predictor, the ONNX graph and a real /v1/classify request agree."""
    import httpx

    from lmforge.serve.config import ServeConfig
    from lmforge.serve.export import export_model
    from lmforge.serve.server import create_app
    from tests.finetune.conftest import write_prepared
    from tests.serve.server_utils import running

    reviews = [t for t in _texts(reviews_small, "train") if len(t) >= 20]
    rows = []
    for i, text in enumerate(reviews):
        other = reviews[(i + 7) % len(reviews)]
        rows.append({"text": text[: len(text) // 2], "pair": text[len(text) // 2:], "label": "match"})
        rows.append({"text": text[: len(text) // 2], "pair": other[len(other) // 2:], "label": "other"})
    data = write_prepared(tmp_path / "pairs", rows, 40, 40)
    out = tmp_path / "pm"
    run = finetune(make_finetune_config(*ft_layers(out, base_dir, data, epochs=1), {
        "data": {"pair_field": "pair"},
        "prompt": {"template": "{text}?[MASK],{pair}", "verbalizer": {"match": "好", "other": "差"}}}, source="t"))
    test = [json.loads(line) for line in open(data / "test.jsonl", encoding="utf-8")]
    texts, pairs, gold = [r["text"] for r in test], [r["pair"] for r in test], [r["label"] for r in test]
    predictor = lmforge.load(out)
    answers = predictor.classify(texts, pairs=pairs)
    accuracy = sum(a["label"] == g for a, g in zip(answers, gold)) / len(gold)
    assert run["report"]["rows"][0]["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    onnx = lmforge.load(export_model(out, "onnx", tmp_path / "onnx")).classify(texts[:4], pairs=pairs[:4])
    with running(create_app(predictor, ServeConfig(model=str(out)))) as url:
        reply = httpx.post(f"{url}/v1/classify", json={"texts": texts[:4], "text_pair": pairs[:4]}, timeout=30)
    assert reply.status_code == 200
    for got, via_onnx, want in zip(reply.json()["results"], onnx, answers):
        assert got["label"] == via_onnx["label"] == want["label"]
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
        assert via_onnx["score"] == pytest.approx(want["score"], abs=1e-4)


def test_the_preflight_plans_a_prompt_based_run_on_its_real_batches(base_dir, reviews_small, tmp_path, capsys):
    import yaml

    from lmforge.cli import main

    spec = {"init_from": str(base_dir), "data": {"path": str(reviews_small), "max_length": 32}, **PROMPT,
            "train": {"batch_size": 8, "budget": "1m", "device": "cpu", "threads": 1}}
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    assert main(["plan", str(path), "--json"]) == 0
    (stage,) = json.loads(capsys.readouterr().out)["stages"]
    assert stage["kind"] == "finetune" and stage["step_s"] > 0 and stage["batches_per_epoch"] == 144 // 8
