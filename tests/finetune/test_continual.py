"""Continual learning: a review-sentiment classifier fine-tuned on a second task (People's Daily sentences:
does it name a person?) keeps its own labels in the head (its rows copied), replays a sample of the reviews,
and can hold its weights with EWC; the result answers both tasks and is scored on the first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge.config import ConfigError
from lmforge.corpora import get_corpus
from lmforge.eval.evaluate import evaluate, make_evaluate_config
from lmforge.finetune.build import build_finetune_model
from lmforge.finetune.continual import EWCPenalty
from lmforge.data.examples import read_classification
from lmforge.finetune.data import ExampleSource, encode_classification, encoding_tokenizer
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.model.modeldir import load_model_dir, read_json
from tests.finetune.conftest import ft_layers, write_prepared


@pytest.fixture(scope="module")
def persons(tmp_path_factory) -> Path:
    rows = []
    for r in get_corpus("peoples-daily-pos").records():
        if r.text and 8 <= len(r.text) <= 50:
            rows.append({"text": r.text, "label": "person" if "nr" in r.fields["pos"] else "no_person"})
        if len(rows) == 200:
            break
    return write_prepared(tmp_path_factory.mktemp("persons"), rows, 40, 40)


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory, base_dir, reviews_small) -> Path:
    out = tmp_path_factory.mktemp("sentiment") / "ft"
    finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, epochs=2), source="t"))
    return out


def test_the_new_head_keeps_the_earlier_rows_and_both_tasks_are_answered(sentiment, persons, reviews_small, tmp_path):
    layers = ft_layers(tmp_path / "both", sentiment, persons, epochs=2,
                       continual={"rehearsal": str(reviews_small), "rehearsal_size": 60, "ewc": 10.0})
    config = make_finetune_config(*layers, source="t")
    labels = ["negative", "no_person", "person", "positive"]
    arch = read_json(sentiment / "config.json")["model"]
    model = build_finetune_model(config, arch, labels)
    earlier = load_model_dir(sentiment).model
    rows = [labels.index(x) for x in earlier.labels]
    torch.testing.assert_close(model.head.classifier.weight[rows], earlier.head.classifier.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.head.classifier.bias[rows], earlier.head.classifier.bias, rtol=0, atol=0)

    finetune(config)
    saved = read_json(tmp_path / "both" / "config.json")
    assert saved["labels"] == labels
    report = evaluate(make_evaluate_config({"data": str(reviews_small), "models": [str(tmp_path / "both")],
                                            "out": str(tmp_path / "first-task"), "progress": False}, source="t"))
    first_task = report["rows"][0]["metrics"]
    assert first_task["examples"] == 48 and 0 <= first_task["accuracy"] <= 1


def test_the_earlier_labels_join_the_head_even_when_nothing_is_replayed(sentiment, persons, reviews_small, tmp_path):
    from lmforge.finetune.stage import example_sources

    arch = read_json(sentiment / "config.json")["model"]
    tok = encoding_tokenizer(sentiment)
    for size, extra in ((0, 0), (40, 40)):
        config = make_finetune_config(*ft_layers(tmp_path, sentiment, persons, continual={
            "rehearsal": str(reviews_small), "rehearsal_size": size}), source="t")
        train, val, labels = example_sources(config, tok, arch)
        assert labels == ["negative", "no_person", "person", "positive"]
        assert len(train.enc.input_ids) == 200 - 80 + extra and len(val.enc.input_ids) == 40 + extra // 4


def test_ewc_is_zero_at_the_start_and_pulls_back(sentiment, reviews_small):
    loaded = load_model_dir(sentiment)
    model = loaded.model.train()
    tok = encoding_tokenizer(sentiment)
    texts, pairs, gold = read_classification(str(reviews_small), "train", "text", None)
    enc = encode_classification(tok, texts[:64], pairs[:64], gold[:64], model.label_to_id, 32)
    penalty = EWCPenalty(model, ExampleSource(enc, 16, 0, shuffle=False, drop_last=False), weight=1.0)
    assert model.training  # restored after estimating the Fisher in eval mode
    assert float(penalty().detach()) == 0.0
    assert all(bool((f >= 0).all()) for f in penalty.fisher.values()) and any(bool(f.any()) for f in penalty.fisher.values())
    with torch.no_grad():
        for p in penalty.params.values():
            p.add_(0.01)
    moved = penalty()
    assert float(moved.detach()) > 0
    moved.backward()
    p, anchor = next((p, penalty.anchor[n]) for n, p in penalty.params.items() if bool(penalty.fisher[n].any()))
    assert bool(((p.grad * (p.detach() - anchor)) >= 0).all())  # the gradient points away from the anchor: descent pulls back


def test_ewc_needs_the_earlier_data_and_a_classification_task(sentiment, persons, tmp_path):
    with pytest.raises(ConfigError, match="continual.ewc"):
        make_finetune_config(*ft_layers(tmp_path, sentiment, persons, continual={"ewc": 1.0}), source="t")
    with pytest.raises(ConfigError, match="continual"):
        make_finetune_config(*ft_layers(tmp_path, sentiment, persons, task="regression",
                                        continual={"rehearsal": str(persons)}), source="t")
