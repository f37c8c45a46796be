"""Baselines on the real review split: majority class and TF-IDF + logistic regression."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from lmforge.config import ConfigError
from lmforge.data.prepared import read_labelled
from lmforge.eval.baselines import majority_predictions, run_baselines, tfidf_analyzer
from lmforge.eval.config import BaselinesConfig, TfidfConfig
from lmforge.eval.metrics import classification_metrics


@pytest.fixture(scope="module")
def review_rows(reviews_prepared):
    out, _ = reviews_prepared
    config = BaselinesConfig(enabled=True, max_train_examples=2000)  # a subset keeps this test to seconds
    return out, run_baselines(str(out), "test", config)


def test_majority_predicts_the_most_frequent_training_label():
    labels = ["a", "b", "c"]
    predicted, probs = majority_predictions(["b", "c", "b", "a"], 3, labels)
    assert predicted == ["b"] * 3 and probs.tolist() == [[0.0, 1.0, 0.0]] * 3
    assert majority_predictions(["c", "a"], 1, labels)[0] == ["a"]  # a tie goes to the first label


def test_review_baselines_score_the_test_split(review_rows):
    out, rows = review_rows
    texts, truth = read_labelled(out, "test")
    majority, tfidf = rows
    assert [r["name"] for r in rows] == ["majority", "tfidf-logreg"] and {r["kind"] for r in rows} == {
        "baseline"
    }
    assert majority["metrics"]["examples"] == tfidf["metrics"]["examples"] == len(texts)
    # the subset is a seeded sample of both classes; majority scores the test share of its label
    top = majority["metrics"]["per_class"]
    predicted_label = next(k for k, v in top.items() if v["recall"] == 1.0)
    assert majority["metrics"]["accuracy"] == pytest.approx(Counter(truth)[predicted_label] / len(truth))
    assert majority["metrics"]["macro"]["f1"] < 0.4
    assert tfidf["info"]["analyzer"] == "char" and tfidf["info"]["ngram_range"] == [1, 3]
    assert tfidf["info"]["train_examples"] == 2000 and tfidf["info"]["C"] == 4.0
    assert 0.75 < tfidf["metrics"]["accuracy"] < 0.9 and tfidf["metrics"]["macro"]["f1"] > 0.75
    assert 0 < tfidf["metrics"]["ece"] < 0.2


def test_rows_are_the_metrics_of_their_predictions(reviews_prepared):
    out, _ = reviews_prepared
    from lmforge.eval.baselines import tfidf_predictions

    train_texts, train_labels = read_labelled(out, "train")
    test_texts, test_labels = read_labelled(out, "test")
    labels = ["negative", "positive"]
    pick = slice(0, None, 20)  # every 20th training text, both classes
    predicted, probs, _ = tfidf_predictions(
        train_texts[pick], train_labels[pick], test_texts[:300], labels, TfidfConfig()
    )
    assert probs.shape == (300, 2) and np.allclose(probs.sum(axis=1), 1.0)
    assert predicted == [labels[i] for i in probs.argmax(axis=1)]
    metrics = classification_metrics(test_labels[:300], predicted, probs, labels)
    assert metrics["accuracy"] == pytest.approx(np.mean(np.array(predicted) == np.array(test_labels[:300])))


def test_analyzer_follows_the_script():
    english = ["the book was great and well written", "terrible service, never again"] * 5
    assert tfidf_analyzer(TfidfConfig(), english) == ("word", (1, 2))
    assert tfidf_analyzer(TfidfConfig(), ["这本书写得很好", "服务太差了"]) == ("char", (1, 3))
    assert tfidf_analyzer(TfidfConfig(analyzer="char", ngram_max=5), english) == ("char", (1, 5))
    with pytest.raises(ValueError, match="ngram_max"):
        TfidfConfig(ngram_min=3, ngram_max=2)


def test_unfinished_or_unlabelled_directories_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no DONE marker"):
        read_labelled(tmp_path, "train")
    (tmp_path / "DONE").write_text(json.dumps({"format_version": 1}))
    rows = [{"text": "好", "label": "positive"}, {"text": "差"}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    with pytest.raises(ConfigError, match=r"train.jsonl:2: no label"):
        read_labelled(tmp_path, "train")
    with pytest.raises(ConfigError, match="no test.jsonl"):
        read_labelled(tmp_path, "test")
    (tmp_path / "DONE").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ConfigError, match="format_version 99"):
        read_labelled(tmp_path, "train")
