"""Self-training: a classifier fine-tuned on few labelled reviews labels the unlabelled reviews it is sure
of, and the next round fine-tunes from the same start on both; texts that are validation or test texts
are never pseudo-labelled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.config import ConfigError
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.model.modeldir import load_model_dir
from lmforge.serve.predictor import Predictor
from tests.finetune.conftest import corpus_rows, ft_layers, write_prepared


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory, reviews_small) -> Path:
    rows = corpus_rows("reviews", 400, seed=7)
    held = [json.loads(line) for s in ("validation", "test") for line in open(reviews_small / f"{s}.jsonl")]
    rows = held[:5] + rows  # five evaluation texts: they must be left out
    return write_prepared(tmp_path_factory.mktemp("unlabelled"), [{"text": r["text"]} for r in rows], 0, 0)


def test_rounds_pseudo_label_what_the_previous_model_is_sure_of(reviews_small, unlabelled, base_dir, tmp_path):
    out = tmp_path / "st"
    threshold = 0.5  # a tiny model is rarely sure: every text is pseudo-labelled (a two-class max is >= 0.5)
    run = finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, epochs=4, train={"early_stopping": {"patience": None}}, self_training={
        "unlabelled": str(unlabelled), "threshold": threshold, "rounds": 1}), source="t"))
    info = json.loads((out / "config.json").read_text())["report_info"]["self_training"]
    held = {json.loads(line)["text"] for s in ("validation", "test") for line in open(reviews_small / f"{s}.jsonl")}
    every = [json.loads(line)["text"] for line in open(unlabelled / "train.jsonl")]
    texts = [t for t in every if t not in held]
    assert info["left_out"] == len(every) - len(texts) >= 5 and info["unlabelled"] == len(texts)
    first = Predictor(load_model_dir(out / "self-training" / "round-0"))
    sure = int((first.class_probabilities(texts).max(-1).values >= threshold).sum())
    assert info["pseudo_labelled"] == [sure] and sure == len(texts)
    steps = [json.loads((out / "self-training" / f"round-{r}" / "config.json").read_text())["report_info"]["steps"]
             for r in (0, 1)]
    train = sum(1 for _ in open(reviews_small / "train.jsonl"))
    assert steps == [4 * (train // 16), 4 * ((train + sure) // 16)]  # round 1 trained on both
    assert len(info["rounds_accuracy"]) == 2
    # OUT is the last round's model
    last, final = load_model_dir(out / "self-training" / "round-1").model.state_dict(), load_model_dir(out).model.state_dict()
    assert all((last[k] == final[k]).all() for k in last)
    assert run["report"]["rows"][0]["info"]["self_training"]["rounds"] == 1


def test_self_training_is_for_classification(reviews_small, unlabelled, base_dir, tmp_path):
    with pytest.raises(ConfigError, match="self_training.unlabelled"):
        make_finetune_config(*ft_layers(tmp_path, base_dir, reviews_small, task="multilabel",
                                        self_training={"unlabelled": str(unlabelled)}), source="t")


def test_a_few_labels_train_the_model_and_its_baselines_on_one_subset(reviews_small, base_dir, tmp_path):
    from lmforge.data.examples import read_classification, subset_indices

    layers = ft_layers(tmp_path / "few", base_dir, reviews_small, epochs=2, report={"baselines": True})
    layers.append({"data": {"max_train_examples": 32, "subset_seed": 3}})
    run = finetune(make_finetune_config(*layers, source="t"))
    rows = {r["name"]: r for r in run["report"]["rows"]}
    assert rows["tfidf-logreg"]["info"]["train_examples"] == 32
    assert json.loads((tmp_path / "few" / "config.json").read_text())["report_info"]["steps"] == 2 * (32 // 16)
    texts, _, _ = read_classification(str(reviews_small), "train", "text", None)
    keep = subset_indices(len(texts), 32, 3)
    assert len(keep) == 32 and keep == sorted(keep) and keep != subset_indices(len(texts), 32, 4)
