"""Multi-label classification: metrics from per-label probabilities, and the per-label decision
thresholds tuned on validation data.

Each example carries a set of labels (possibly empty); a model gives one independent probability per
label (sigmoid), and a label is predicted where its probability reaches that label's threshold.
Conventions follow scikit-learn's multi-label scores (``f1_score(average="micro"|"macro")`` on the
indicator matrix, ``zero_division=0``; ``hamming_loss``; ``label_ranking_average_precision_score``;
``ndcg_score``), and the tests check the parity.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["indicator", "multilabel_metrics", "tune_thresholds"]


def indicator(label_sets: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    """(N, K) 0/1 matrix in ``labels`` order; a label outside ``labels`` is left out."""
    index = {name: i for i, name in enumerate(labels)}
    out = np.zeros((len(label_sets), len(labels)), dtype=np.int64)
    for row, names in enumerate(label_sets):
        for name in names:
            if name in index:
                out[row, index[name]] = 1
    return out


def _prf(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column precision, recall, F1 of 0/1 matrices (N, K), 0 where undefined."""
    tp = (truth & pred).sum(0).astype(np.float64)  # (K,)
    predicted, support = pred.sum(0).astype(np.float64), truth.sum(0).astype(np.float64)
    def div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.zeros_like(a), where=b > 0)

    return div(tp, predicted), div(tp, support), div(2 * tp, predicted + support)


def tune_thresholds(truth: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(K,) per-label threshold maximising that label's F1 on (N, K) truth and probabilities: the
    midpoint below the best cut among the observed probabilities; 0.5 for a label with no positive."""
    K = probs.shape[1]
    out = np.full(K, 0.5)
    for k in range(K):
        y, p = truth[:, k].astype(bool), probs[:, k]
        if not y.any():
            continue
        order = np.argsort(-p, kind="stable")
        ys, ps = y[order], p[order]
        tp = np.cumsum(ys)  # predicting the top i+1 as positive
        f1 = 2 * tp / (np.arange(1, len(ps) + 1) + y.sum())
        last = np.r_[ps[1:] != ps[:-1], True]  # only cuts between distinct probabilities
        best = int(np.argmax(np.where(last, f1, -1.0)))
        below = ps[best + 1] if best + 1 < len(ps) else 0.0
        out[k] = float((ps[best] + below) / 2)
    return out


def multilabel_metrics(label_sets: Sequence[Sequence[str]], probabilities: np.ndarray, labels: Sequence[str],
                       thresholds: Optional[Sequence[float]] = None) -> dict[str, Any]:
    """Subset accuracy, Hamming loss, micro/macro/per-label precision-recall-F1 at the thresholds
    (default 0.5), and the ranking scores of the probabilities themselves: macro ROC-AUC and PR-AUC
    over labels with both classes present, label-ranking average precision, precision@1 and NDCG."""
    from sklearn.metrics import (average_precision_score, label_ranking_average_precision_score, ndcg_score,
                                 roc_auc_score)

    probs = np.asarray(probabilities, dtype=np.float64)  # (N, K)
    truth = indicator(label_sets, labels)  # (N, K)
    if probs.shape != truth.shape:
        raise ValueError(f"probabilities must be (examples, labels) = {truth.shape}, got shape {probs.shape}")
    cut = np.full(len(labels), 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    pred = (probs >= cut).astype(np.int64)  # (N, K)
    precision, recall, f1 = _prf(truth, pred)
    tp, n_pred, n_true = int((truth & pred).sum()), int(pred.sum()), int(truth.sum())
    micro_p = tp / n_pred if n_pred else 0.0
    micro_r = tp / n_true if n_true else 0.0
    both = [k for k in range(len(labels)) if 0 < truth[:, k].sum() < len(truth)]
    ranked = truth.sum(1) > 0  # examples with at least one label: the ranking scores are defined there
    N = len(truth)
    result: dict[str, Any] = {
        "task": "multilabel", "examples": N, "labels": list(labels),
        "thresholds": {name: float(t) for name, t in zip(labels, cut)},
        "subset_accuracy": float((pred == truth).all(1).mean()) if N else 0.0,
        "hamming_loss": float((pred != truth).mean()) if N else 0.0,
        "micro": {"precision": micro_p, "recall": micro_r,
                  "f1": 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0},
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "per_class": {name: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                             "support": int(truth[:, k].sum())} for k, name in enumerate(labels)},
        "roc_auc": float(np.mean([roc_auc_score(truth[:, k], probs[:, k]) for k in both])) if both else None,
        "pr_auc": float(np.mean([average_precision_score(truth[:, k], probs[:, k]) for k in both])) if both else None,
        "lrap": float(label_ranking_average_precision_score(truth[ranked], probs[ranked])) if ranked.any() else None,
        "precision_at_1": float(truth[ranked][np.arange(int(ranked.sum())), probs[ranked].argmax(1)].mean())
        if ranked.any() else None,
        "ndcg": float(ndcg_score(truth[ranked], probs[ranked])) if ranked.sum() > 0 and len(labels) > 1 else None,
    }
    return result
