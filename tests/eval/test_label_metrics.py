"""Multi-label and regression metrics against scikit-learn and scipy, and threshold tuning against a
brute-force search."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn import metrics as skm

from lmforge.eval.multilabel import indicator, multilabel_metrics, tune_thresholds
from lmforge.eval.regression import regression_metrics

LABELS = ["organisation", "person", "place", "time"]


def _label_sets(seed: int = 0, n: int = 200) -> tuple[list[list[str]], np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.random((n, len(LABELS))) < [0.1, 0.4, 0.5, 0.3]  # (N, K), some rows empty
    probs = np.clip(truth * 0.35 + rng.random(truth.shape) * 0.65, 0, 1)  # informative, not perfect
    return [[LABELS[k] for k in np.flatnonzero(row)] for row in truth], probs


def test_multilabel_metrics_match_scikit_learn():
    sets, probs = _label_sets()
    cut = [0.3, 0.5, 0.55, 0.6]
    m = multilabel_metrics(sets, probs, LABELS, cut)
    truth = indicator(sets, LABELS)
    pred = (probs >= cut).astype(int)
    assert m["subset_accuracy"] == pytest.approx(skm.accuracy_score(truth, pred))
    assert m["hamming_loss"] == pytest.approx(skm.hamming_loss(truth, pred))
    for average in ("micro", "macro"):
        for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
            assert m[average][name] == pytest.approx(fn(truth, pred, average=average, zero_division=0))
    per = skm.f1_score(truth, pred, average=None, zero_division=0)
    assert [m["per_class"][x]["f1"] for x in LABELS] == pytest.approx(per)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, probs, average="macro"))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(truth, probs, average="macro"))
    ranked = truth.sum(1) > 0
    assert m["lrap"] == pytest.approx(skm.label_ranking_average_precision_score(truth[ranked], probs[ranked]))
    assert m["ndcg"] == pytest.approx(skm.ndcg_score(truth[ranked], probs[ranked]))
    top = probs[ranked].argmax(1)
    assert m["precision_at_1"] == pytest.approx(truth[ranked][np.arange(ranked.sum()), top].mean())


def test_a_label_no_example_has_is_left_out_of_the_auc_not_a_crash():
    sets, probs = _label_sets(seed=1)
    sets = [[x for x in row if x != "organisation"] for row in sets]
    m = multilabel_metrics(sets, probs, LABELS)
    truth = indicator(sets, LABELS)
    assert m["per_class"]["organisation"]["support"] == 0
    assert m["roc_auc"] == pytest.approx(np.mean([skm.roc_auc_score(truth[:, k], probs[:, k]) for k in (1, 2, 3)]))
    with pytest.raises(ValueError, match="probabilities must be"):
        multilabel_metrics(sets, probs[:, :3], LABELS)


def test_tuned_thresholds_reach_the_best_f1_of_any_cut():
    sets, probs = _label_sets(seed=2)
    truth = indicator(sets, LABELS)
    cut = tune_thresholds(truth, probs)
    for k in range(len(LABELS)):
        got = skm.f1_score(truth[:, k], probs[:, k] >= cut[k], zero_division=0)
        best = max(skm.f1_score(truth[:, k], probs[:, k] >= t, zero_division=0) for t in np.unique(probs[:, k]))
        assert got == pytest.approx(best)
    assert tune_thresholds(np.zeros((5, 1), int), np.full((5, 1), 0.9))[0] == 0.5  # no positive: the default


def test_regression_metrics_match_scipy_and_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.normal(2.0, 0.5, 300)
    p = y + rng.normal(0, 0.3, 300)
    m = regression_metrics(y.tolist(), p.tolist())
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, p))
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert m["r2"] == pytest.approx(skm.r2_score(y, p))
    assert m["pearson"] == pytest.approx(pearsonr(y, p).statistic)
    assert m["spearman"] == pytest.approx(spearmanr(y, p).statistic)
    constant = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])  # a constant prediction: no correlation
    assert constant["pearson"] is None and constant["spearman"] is None and constant["r2"] == pytest.approx(0.0)
