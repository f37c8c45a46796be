"""Metrics against scikit-learn and seqeval on the same predictions, plus hand-checked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sklearn.metrics as skm

from lmforge.eval.metrics import (
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    language_model_metrics,
    span_metrics,
    tag_spans,
)


def _random_case(seed: int, n: int, k: int) -> tuple[list[str], list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    names = [f"c{i}" for i in range(k)]
    truth = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[truth] * rng.random(
        (n, 1)
    )  # (N, K), better than chance
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return [names[i] for i in truth], [names[i] for i in probs.argmax(axis=1)], probs


def _assert_matches_sklearn(y_true, y_pred, labels=None):
    m = classification_metrics(y_true, y_pred, labels=labels)
    order = labels if labels is not None else sorted(set(y_true) | set(y_pred))
    assert m["labels"] == [str(x) for x in order]
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=order).tolist()
    for average in ("micro", "macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=order, average=average, zero_division=0
        )
        assert (m[average]["precision"], m[average]["recall"], m[average]["f1"]) == pytest.approx(
            (p, r, f)
        ), average
    p, r, f, s = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=order, average=None, zero_division=0
    )
    for i, label in enumerate(order):
        row = m["per_class"][str(label)]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (p[i], r[i], f[i], s[i])
        )
    return m


@pytest.mark.parametrize("seed,n,k", [(0, 200, 2), (1, 300, 5), (2, 17, 3), (3, 1, 4)])
def test_random_predictions_match_sklearn(seed, n, k):
    y_true, y_pred, _ = _random_case(seed, n, k)
    _assert_matches_sklearn(y_true, y_pred)


def test_class_never_predicted_and_label_only_in_truth():
    y_true = ["a", "b", "c", "c", "b", "a", "c"]
    y_pred = ["a", "a", "a", "a", "b", "a", "b"]  # c never predicted: precision 0, not NaN
    m = _assert_matches_sklearn(y_true, y_pred)
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 3}
    # an extra label present in neither list still gets a row of zeros, like sklearn with labels=
    _assert_matches_sklearn(y_true, y_pred, labels=["c", "b", "a", "d"])


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_single_class_and_integer_labels():
    m = _assert_matches_sklearn([1, 1, 1], [1, 1, 1])
    assert m["accuracy"] == 1.0 and m["macro"]["f1"] == 1.0 and m["confusion_matrix"] == [[3]]
    _assert_matches_sklearn([0, 0, 0, 0], [0, 2, 0, 2])


def test_numpy_inputs_give_the_same_result():
    y_true, y_pred, probs = _random_case(5, 60, 3)
    as_lists = classification_metrics(y_true, y_pred, probs, labels=["c0", "c1", "c2"])
    as_arrays = classification_metrics(
        np.array(y_true), np.array(y_pred), probs, labels=np.array(["c0", "c1", "c2"])
    )
    assert as_arrays == as_lists
    ints = classification_metrics(
        np.array([int(t[1]) for t in y_true]), np.array([int(p[1]) for p in y_pred])
    )
    assert ints["accuracy"] == as_lists["accuracy"] and ints["labels"] == ["0", "1", "2"]


def test_labels_subset_leaves_other_examples_out_of_the_matrix():
    y_true, y_pred = ["a", "b", "x", "a"], ["a", "x", "b", "b"]
    _assert_matches_sklearn(y_true, y_pred, labels=["a", "b"])
    assert confusion_matrix(y_true, y_pred, ["a", "b"]).sum() == 2


def test_ece_against_a_direct_loop_and_known_values():
    y_true, _, probs = _random_case(4, 500, 3)
    truth = np.array([int(t[1:]) for t in y_true])
    for n_bins in (1, 10, 15):
        conf, pred = probs.max(1), probs.argmax(1)
        edges = np.linspace(0, 1, n_bins + 1)
        expected = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            inside = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
            if inside.any():
                expected += inside.mean() * abs((pred[inside] == truth[inside]).mean() - conf[inside].mean())
        assert expected_calibration_error(truth, probs, n_bins) == pytest.approx(expected)
    # confident and always wrong -> 1; confident and always right -> 0; 70% right at 0.7 -> 0
    assert expected_calibration_error([1, 1], np.array([[1.0, 0.0], [1.0, 0.0]])) == pytest.approx(1.0)
    assert expected_calibration_error([0, 1], np.array([[1.0, 0.0], [0.0, 1.0]])) == 0.0
    truth10 = [0] * 7 + [1] * 3
    assert expected_calibration_error(truth10, np.tile([0.7, 0.3], (10, 1)), 10) == pytest.approx(0.0)
    m = classification_metrics(
        y_true, [f"c{i}" for i in probs.argmax(1)], probs, labels=["c0", "c1", "c2"], n_bins=10
    )
    assert m["ece"] == pytest.approx(expected_calibration_error(truth, probs, 10)) and m["ece_bins"] == 10


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="3 items but y_pred has 2"):
        classification_metrics(["a", "b", "a"], ["a", "b"])
    with pytest.raises(ValueError, match=r"probabilities must be .*\(2, 2\)"):
        classification_metrics(["a", "b"], ["a", "b"], np.ones((2, 3)))
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error([0], np.ones((1, 2)), 0)


# ---------------------------------------------------------------- spans


def test_hand_checked_spans():
    assert tag_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    assert tag_spans(["O", "I-PER", "I-PER", "O"]) == [("PER", 1, 3)]  # I- without B- opens a span
    assert tag_spans(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 3)]  # a type change splits
    assert tag_spans(["B-ORG", "B-ORG", "I-ORG"]) == [("ORG", 0, 1), ("ORG", 1, 3)]
    # BMES word segmentation: 迈向 / 充满 / 的 / 新世纪 -> words as untyped spans
    assert tag_spans(list("BEBESBME")) == [("_", 0, 2), ("_", 2, 4), ("_", 4, 5), ("_", 5, 8)]
    assert tag_spans(list("MEBS")) == [("_", 0, 2), ("_", 2, 3), ("_", 3, 4)]  # M without B opens a word
    assert tag_spans([]) == []


def test_hand_checked_span_scores():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["B-ORG", "I-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["I-ORG", "I-ORG", "O"]]
    m = span_metrics(gold, pred)
    # gold: PER(0,2) LOC(3,5) ORG(0,2); predicted: PER(0,2) LOC(3,4) ORG(0,2) -> 2 of 3 right
    assert (m["correct_spans"], m["predicted_spans"], m["gold_spans"]) == (2, 3, 3)
    assert m["precision"] == m["recall"] == m["f1"] == pytest.approx(2 / 3)
    assert m["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_type"]["ORG"]["f1"] == 1.0 and m["token_accuracy"] == pytest.approx(6 / 8)
    with pytest.raises(ValueError, match="sequence 1: 3 gold tags but 2 predicted"):
        span_metrics(gold, [pred[0], pred[1][:2]])
    with pytest.raises(ValueError, match="'X-PER' at position 1"):
        tag_spans(["O", "X-PER"])


def _random_tags(rng, n: int, prefixes: str, types: list[str]) -> list[str]:
    out = []
    for _ in range(n):
        head = rng.choice(list(prefixes))
        out.append(head if head == "O" or not types else f"{head}-{rng.choice(types)}")
    return out


def test_spans_and_scores_match_seqeval_on_random_malformed_sequences():
    seqeval = pytest.importorskip("seqeval.metrics")
    from seqeval.metrics.sequence_labeling import get_entities

    rng = np.random.default_rng(0)
    for prefixes, types in (("BIO", ["PER", "LOC", "ORG"]), ("BIOES", ["PER", "LOC"]), ("BIES", [])):
        gold = [_random_tags(rng, int(rng.integers(1, 12)), prefixes, types) for _ in range(150)]
        pred = [
            [t if rng.random() < 0.7 else _random_tags(rng, 1, prefixes, types)[0] for t in g] for g in gold
        ]
        for seq in gold:
            assert tag_spans(seq) == [(k, s, e + 1) for k, s, e in get_entities(seq)], seq
        m = span_metrics(gold, pred)
        assert m["f1"] == pytest.approx(seqeval.f1_score(gold, pred))
        assert m["precision"] == pytest.approx(seqeval.precision_score(gold, pred))
        assert m["recall"] == pytest.approx(seqeval.recall_score(gold, pred))
    # BMES is IOBES without types and with M for I
    bmes = [_random_tags(rng, 10, "BMES", []) for _ in range(50)]
    for seq in bmes:
        assert tag_spans(seq) == [
            (k, s, e + 1) for k, s, e in get_entities(["I" if t == "M" else t for t in seq])
        ]


# ---------------------------------------------------------------- language models


def test_language_model_metrics():
    m = language_model_metrics(loss_sum=2.0 * 500, token_count=500)
    assert m["loss"] == 2.0 and m["perplexity"] == pytest.approx(math.e**2) and m["tokens"] == 500
    assert language_model_metrics(1e6, 10)["perplexity"] == math.inf
    with pytest.raises(ValueError, match="token_count"):
        language_model_metrics(1.0, 0)


def test_roc_and_pr_auc_in_every_classification_row():
    """Binary: of the second label; more classes: macro one-vs-rest; undefined (None) when a class is absent."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    gold = rng.choice(["negative", "positive"], 200)
    p_pos = np.clip((gold == "positive") * 0.3 + rng.random(200) * 0.7, 0, 1)  # informative, not perfect
    probs = np.stack([1 - p_pos, p_pos], 1)
    pred = np.where(p_pos > 0.5, "positive", "negative")
    m = classification_metrics(list(gold), list(pred), probs, ["negative", "positive"])
    assert m["roc_auc"] == pytest.approx(roc_auc_score(gold == "positive", p_pos))
    assert m["pr_auc"] == pytest.approx(average_precision_score(gold == "positive", p_pos))
    assert 0.5 < m["roc_auc"] < 1
    perfect = classification_metrics(["a", "b", "a"], ["a", "b", "a"], np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    assert perfect["roc_auc"] == 1.0 and perfect["pr_auc"] == 1.0
    three = rng.choice(["x", "y", "z"], 90)
    p3 = rng.dirichlet([1, 1, 1], 90)
    m3 = classification_metrics(list(three), [["x", "y", "z"][i] for i in p3.argmax(1)], p3, ["x", "y", "z"])
    onehot = np.eye(3)[[["x", "y", "z"].index(t) for t in three]]
    assert m3["roc_auc"] == pytest.approx(roc_auc_score(onehot, p3, average="macro"))
    absent = classification_metrics(["a", "a"], ["a", "b"], np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"])
    assert absent["roc_auc"] is None and absent["pr_auc"] is None
