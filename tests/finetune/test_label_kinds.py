"""Multi-label and regression end to end: `data prepare` (label sets compared as sets; a numeric target
stratified by its deciles, not sent whole to train), fine-tuning (sigmoid + BCE with per-label thresholds
tuned on validation; MSE on standardised targets folded back into the head), the report next to its
baselines, `Predictor.classify`, `lmforge predict`, `/v1/classify` on a real server, and the HF export.

The data: People's Daily sentences (the `peoples-daily-pos` corpus, gold words and part-of-speech tags).
Multi-label: which kinds of name a sentence mentions, from its tags (nr person, ns place, nt organisation,
t time word), none to all four. Regression: the sentence's mean word length in characters, from its gold
segmentation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

import lmforge
from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.corpora import get_corpus
from lmforge.data.prepare import make_prepare_config, prepare
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.model.hf import export_hf
from lmforge.serve.config import ServeConfig
from lmforge.serve.server import create_app
from tests.finetune.conftest import ft_layers
from tests.serve.server_utils import running

KINDS = {"nr": "person", "ns": "place", "nt": "organisation", "t": "time"}


def _sentences(n: int = 360, seed: int = 0) -> list[dict]:
    rows = []
    for r in get_corpus("peoples-daily-pos").records():
        if r.text and 8 <= len(r.text) <= 40:
            words, tags = r.fields["words"], r.fields["pos"]
            names = sorted({KINDS[t] for t in tags if t in KINDS})
            rows.append({"text": r.text, "kinds": names[::-1],  # reversed: prepare compares them as sets
                         "word_length": round(sum(map(len, words)) / len(words), 4)})
        if len(rows) == n:
            break
    random.Random(seed).shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("label_kinds")
    raw = root / "sentences.jsonl"
    raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _sentences()), encoding="utf-8")
    out = {}
    for name, field in (("multilabel", "kinds"), ("regression", "word_length")):
        prepare(make_prepare_config({"input": {"paths": [str(raw)], "label_field": field},
                                     "out": str(root / name), "progress": False, "workers": 1}, source="t"))
        out[name] = root / name
    return out


def _rows(data: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in open(data / f"{split}.jsonl", encoding="utf-8")]


def test_prepare_keeps_label_sets_and_spreads_a_numeric_target_over_the_splits(prepared):
    sets = [r["label"] for s in ("train", "validation", "test") for r in _rows(prepared["multilabel"], s)]
    assert any(len(x) >= 2 for x in sets) and any(x == [] for x in sets)  # several kinds, and none
    sizes = {s: len(_rows(prepared["regression"], s)) for s in ("train", "validation", "test")}
    total = sum(sizes.values())
    # a stratum per distinct value would have put every sentence into train; deciles keep 80/10/10
    assert abs(sizes["validation"] / total - 0.1) < 0.03 and abs(sizes["test"] / total - 0.1) < 0.03
    values = [r["label"] for r in _rows(prepared["regression"], "test")]
    assert len(set(values)) > 10


def _finetune(out: Path, base: Path, data: Path, task: str, **over) -> dict:
    layers = ft_layers(out, base, data, task=task, epochs=3, report={"baselines": True},
                       train={"precision": "fp32"}, **over)
    return finetune(make_finetune_config(*layers, source="t"))


def test_multilabel_fine_tune_evaluate_predict_serve_and_export(prepared, base_dir, tmp_path, capsys):
    from sklearn.metrics import f1_score

    data, out = prepared["multilabel"], tmp_path / "ml"
    report = _finetune(out, base_dir, data, "multilabel")["report"]
    names = [r["name"] for r in report["rows"]]
    assert names[1:] == ["prior", "tfidf-logreg"] and all(r["metrics"]["task"] == "multilabel" for r in report["rows"])
    config = json.loads((out / "config.json").read_text())
    assert config["problem"] == "multi_label" and config["labels"] == sorted(KINDS.values())
    assert set(config["thresholds"]) == set(config["labels"]) and all(0 < t < 1 for t in config["thresholds"].values())

    test = _rows(data, "test")
    predictor = lmforge.load(out)
    answers = predictor.classify([r["text"] for r in test])
    for a in answers[:5]:  # a label is chosen where its own probability reaches its threshold
        assert a["labels"] == [k for k, p in a["scores"].items() if p >= config["thresholds"][k]]
    labels = config["labels"]
    truth = np.array([[name in r["label"] for name in labels] for r in test])
    chosen = np.array([[name in a["labels"] for name in labels] for a in answers])
    model_row = report["rows"][0]["metrics"]
    assert model_row["micro"]["f1"] == pytest.approx(f1_score(truth, chosen, average="micro", zero_division=0))
    assert model_row["macro"]["f1"] == pytest.approx(f1_score(truth, chosen, average="macro", zero_division=0))

    assert main(["predict", "--model", str(out), "--json", test[0]["text"]]) == 0
    assert json.loads(capsys.readouterr().out)["classify"]["labels"] == answers[0]["labels"]
    with running(create_app(predictor, ServeConfig(model=str(out)))) as url:
        reply = httpx.post(f"{url}/v1/classify", json={"texts": [r["text"] for r in test[:4]]}, timeout=30)
    assert reply.status_code == 200
    assert [r["labels"] for r in reply.json()["results"]] == [a["labels"] for a in answers[:4]]

    export_hf(out, tmp_path / "hf")
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.problem_type == "multi_label_classification"
    ids = torch.tensor([predictor.tokenizer.encode(test[0]["text"]).ids])
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits.sigmoid(), predictor.class_probabilities([test[0]["text"]]),
                                   rtol=0, atol=1e-5)
    reimported = lmforge.load(tmp_path / "hf")  # and back: a multi-label head again
    assert reimported.problem == "multi_label"


def test_regression_fine_tune_evaluate_predict_serve_and_export(prepared, base_dir, tmp_path):
    data, out = prepared["regression"], tmp_path / "reg"
    run = _finetune(out, base_dir, data, "regression")
    report = run["report"]
    assert [r["name"] for r in report["rows"]][1:] == ["mean", "tfidf-ridge"]
    config = json.loads((out / "config.json").read_text())
    assert config["problem"] == "regression" and config["labels"] == ["label"]

    test = _rows(data, "test")
    predictor = lmforge.load(out)
    values = [a["value"] for a in predictor.classify([r["text"] for r in test])]
    gold = [r["label"] for r in test]
    metrics = report["rows"][0]["metrics"]
    assert metrics["pearson"] == pytest.approx(pearsonr(gold, values).statistic, abs=1e-6)
    assert metrics["rmse"] == pytest.approx(float(np.sqrt(np.mean((np.array(values) - gold) ** 2))), rel=1e-6)

    # the head learnt standardised targets; folded back, its outputs are in characters per word: the
    # validation MSE of the saved model equals the best epoch's val_loss times the train variance
    train_y = np.array([r["label"] for r in _rows(data, "train")])
    val = _rows(data, "validation")
    val_pred = np.array([a["value"] for a in predictor.classify([r["text"] for r in val])])
    mse = float(np.mean((val_pred - np.array([r["label"] for r in val])) ** 2))
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = min(r["val_loss"] for r in logged if "val_loss" in r)
    assert mse == pytest.approx(best * train_y.var(), rel=1e-3)
    assert not any("val_acc" in r for r in logged)  # no accuracy for a number

    with running(create_app(predictor, ServeConfig(model=str(out)))) as url:
        reply = httpx.post(f"{url}/v1/classify", json={"texts": [r["text"] for r in test[:3]]}, timeout=30)
    assert reply.status_code == 200
    assert [r["value"] for r in reply.json()["results"]] == pytest.approx(values[:3], abs=1e-5)

    export_hf(out, tmp_path / "hf")
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.problem_type == "regression" and hf.config.num_labels == 1
    ids = torch.tensor([predictor.tokenizer.encode(test[0]["text"]).ids])
    with torch.no_grad():
        assert float(hf(input_ids=ids).logits[0, 0]) == pytest.approx(values[0], abs=1e-4)


def test_losses_that_need_one_softmax_are_refused_and_bad_values_named(prepared, base_dir, tmp_path):
    with pytest.raises(ConfigError, match="loss.focal_gamma"):
        make_finetune_config(*ft_layers(tmp_path, base_dir, prepared["multilabel"], task="multilabel",
                                        loss={"focal_gamma": 2.0}), source="t")
    with pytest.raises(ConfigError, match="distill.teacher"):
        make_finetune_config(*ft_layers(tmp_path, base_dir, prepared["regression"], task="regression",
                                        distill={"teacher": str(base_dir)}), source="t")
    # a regression run on the multi-label directory: its label is a list, named with file and line
    with pytest.raises(ConfigError, match=r"train\.jsonl:1: 'label' is .*needs a number"):
        finetune(make_finetune_config(*ft_layers(tmp_path / "x", base_dir, prepared["multilabel"],
                                                 task="regression"), source="t"))
