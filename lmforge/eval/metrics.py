"""Evaluation metrics from predictions: classification, tagging spans and language-model loss.

Pure numpy, no model code: a caller passes labels (and class probabilities) and gets back a
JSON-serialisable dict. Conventions follow scikit-learn (a class with no predictions has
precision 0, not NaN) and seqeval's default mode for spans (conlleval-compatible), so numbers
can be compared with what users already know; the tests check both parities.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Hashable, Optional, Sequence

import numpy as np

__all__ = [
    "classification_metrics",
    "confusion_matrix",
    "expected_calibration_error",
    "language_model_metrics",
    "precision_recall_f1",
    "span_metrics",
    "tag_spans",
]

Label = Hashable


# ---------------------------------------------------------------- classification


def _label_order(
    y_true: Sequence[Label], y_pred: Sequence[Label], labels: Optional[Sequence[Label]]
) -> list[Label]:
    if labels is not None:
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels repeat a name: {list(labels)}")
        return list(labels)
    return sorted(set(y_true) | set(y_pred), key=lambda x: (str(type(x)), x))  # sklearn: sorted union


def confusion_matrix(
    y_true: Sequence[Label], y_pred: Sequence[Label], labels: Optional[Sequence[Label]] = None
) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class, in ``labels`` order.

    Examples whose true or predicted label is not in ``labels`` are left out (as in scikit-learn).
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    order = _label_order(y_true, y_pred, labels)
    index = {label: i for i, label in enumerate(order)}
    cm = np.zeros((len(order), len(order)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        if t in index and p in index:
            cm[index[t], index[p]] += 1
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (scikit-learn's zero_division=0)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def precision_recall_f1(
    y_true: Sequence[Label], y_pred: Sequence[Label], labels: Sequence[Label]
) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support, each (K,) in ``labels`` order.

    Like scikit-learn, a prediction of class k counts against k's precision even when its true
    label is outside ``labels``, so these are not always derivable from the confusion matrix.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    index = {label: i for i, label in enumerate(labels)}
    tp, predicted, support = (np.zeros(len(labels), dtype=np.int64) for _ in range(3))
    for t, p in zip(y_true, y_pred):
        if p in index:
            predicted[index[p]] += 1
            tp[index[p]] += t == p
        if t in index:
            support[index[t]] += 1
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, predicted + support)  # = 2PR/(P+R), and 0 when both are 0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
        "tp": tp,
        "predicted": predicted,
    }


def expected_calibration_error(
    true_index: Sequence[int], probabilities: np.ndarray, n_bins: int = 15
) -> float:
    """ECE (Guo et al. 2017): sum over equal-width confidence bins of |B|/N * |accuracy(B) - confidence(B)|.

    ``probabilities`` is (N, K); the prediction is its argmax, the confidence its max. Bins are
    (lo, hi] with the first one closed at 0.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    probs = np.asarray(probabilities, dtype=np.float64)  # (N, K)
    truth = np.asarray(true_index)  # (N,)
    if probs.ndim != 2 or probs.shape[0] != truth.shape[0]:
        raise ValueError(f"probabilities must be (N, K) with N = {truth.shape[0]}, got shape {probs.shape}")
    if probs.shape[0] == 0:
        return 0.0
    confidence = probs.max(axis=1)  # (N,)
    correct = (probs.argmax(axis=1) == truth).astype(np.float64)  # (N,)
    # bin b holds confidences in (b/n, (b+1)/n]; confidence 0 goes to bin 0
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)  # (N,)
    gap = np.bincount(bins, weights=correct, minlength=n_bins) - np.bincount(
        bins, weights=confidence, minlength=n_bins
    )
    return float(np.abs(gap).sum() / probs.shape[0])  # |sum(acc - conf)| per bin = |B| * |acc(B) - conf(B)|


def classification_metrics(
    y_true: Sequence[Label],
    y_pred: Sequence[Label],
    probabilities: Optional[np.ndarray] = None,
    labels: Optional[Sequence[Label]] = None,
    n_bins: int = 15,
) -> dict[str, Any]:
    """Accuracy, micro/macro/weighted precision-recall-F1, per-class scores, confusion matrix and ECE.

    ``labels`` fixes the class order (default: sorted union of y_true and y_pred); columns of
    ``probabilities`` (N, K) must follow it. Class names are stored as strings in the result.
    """
    order = _label_order(y_true, y_pred, labels)
    cm = confusion_matrix(y_true, y_pred, order)  # (K, K)
    scores = precision_recall_f1(y_true, y_pred, order)
    support = scores["support"]
    total = int(support.sum())
    tp = float(scores["tp"].sum())
    micro_p = tp / max(int(scores["predicted"].sum()), 1)
    micro_r = tp / max(total, 1)
    result: dict[str, Any] = {
        "task": "classification",
        "examples": len(y_true),
        "labels": [str(x) for x in order],
        "accuracy": float(np.mean([t == p for t, p in zip(y_true, y_pred)])) if len(y_true) else 0.0,
        "micro": {"precision": micro_p, "recall": micro_r, "f1": _f1(micro_p, micro_r)},
        "macro": {k: float(scores[k].mean()) if len(order) else 0.0 for k in ("precision", "recall", "f1")},
        "weighted": {
            k: float(_safe_div((scores[k] * support).sum(), total)) for k in ("precision", "recall", "f1")
        },
        "per_class": {
            str(label): {
                "precision": float(scores["precision"][i]),
                "recall": float(scores["recall"][i]),
                "f1": float(scores["f1"][i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(order)
        },
        "confusion_matrix": cm.tolist(),
    }
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=np.float64)
        if probs.ndim != 2 or probs.shape != (len(y_true), len(order)):
            raise ValueError(
                f"probabilities must be (examples, classes) = ({len(y_true)}, {len(order)}) in label order "
                f"{order}, got shape {probs.shape}"
            )
        index = {label: i for i, label in enumerate(order)}
        result["ece"] = expected_calibration_error([index.get(t, -1) for t in y_true], probs, n_bins)
        result["ece_bins"] = n_bins
        result.update(ranking_metrics([index.get(t, -1) for t in y_true], probs))
    return result


def ranking_metrics(y_true: Sequence[int], probabilities: np.ndarray) -> dict[str, Any]:
    """ROC-AUC and PR-AUC (average precision) from (N, K) probabilities and class ids (-1: a class
    the model does not know). Binary: of the second class (in label order, e.g. "positive"); more
    classes: the macro mean of one-vs-rest. Left out (None) when a class the scores rank is absent
    from y_true, where neither is defined; scikit-learn computes both."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y_true)
    K = probabilities.shape[1]
    known = y >= 0
    y, probs = y[known], probabilities[known]
    present = set(np.unique(y).tolist())
    if K < 2 or present != set(range(K)):
        return {"roc_auc": None, "pr_auc": None}
    if K == 2:
        return {"roc_auc": float(roc_auc_score(y == 1, probs[:, 1])),
                "pr_auc": float(average_precision_score(y == 1, probs[:, 1]))}
    onehot = np.eye(K)[y]  # (N, K)
    return {"roc_auc": float(roc_auc_score(onehot, probs, average="macro")),
            "pr_auc": float(average_precision_score(onehot, probs, average="macro"))}


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


# ---------------------------------------------------------------- tagging spans

_PREFIXES = {"B": "B", "I": "I", "M": "I", "E": "E", "S": "S"}  # BMES's M is IOBES's I


def _split_tag(tag: str, position: int) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'S' -> ('S', '_') for untyped schemes such as BMES; 'O' -> ('O', '_')."""
    if tag == "O":
        return "O", "_"
    head, _, kind = tag.partition("-")
    if head not in _PREFIXES:
        raise ValueError(f"tag {tag!r} at position {position} is not O or B/I/M/E/S[-TYPE]")
    return _PREFIXES[head], kind or "_"


def _chunk_starts(prev: str, tag: str, prev_kind: str, kind: str) -> bool:
    if tag in ("B", "S"):
        return True
    if tag in ("I", "E") and prev in ("E", "S", "O"):  # a continuation tag with nothing open starts a span
        return True
    return tag != "O" and kind != prev_kind


def _chunk_ends(prev: str, tag: str, prev_kind: str, kind: str) -> bool:
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev != "O" and kind != prev_kind


def tag_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Spans (type, start, end) with end exclusive, from BIO, IOBES or BMES tags.

    Untyped tags (BMES word segmentation: 'B', 'M', 'E', 'S') give type '_'. Malformed sequences
    are read like conlleval and seqeval's default mode: an I- (or M/E) with no open span of its
    type starts one, and a type change closes the open span.
    """
    spans: list[tuple[str, int, int]] = []
    prev, prev_kind, start = "O", "_", 0
    for i, raw in enumerate([*tags, "O"]):  # a final O closes the last span
        tag, kind = _split_tag(raw, i)
        if _chunk_ends(prev, tag, prev_kind, kind):
            spans.append((prev_kind, start, i))
        if _chunk_starts(prev, tag, prev_kind, kind):
            start = i
        prev, prev_kind = tag, kind
    return spans


def span_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level (exact span and type) micro precision/recall/F1, per type, and token accuracy."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sequences but {len(predicted)} predicted ones")
    counts: dict[str, Counter] = {"gold": Counter(), "pred": Counter(), "correct": Counter()}
    tokens = right = 0
    for n, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise ValueError(f"sequence {n}: {len(g)} gold tags but {len(p)} predicted tags")
        gold_spans, pred_spans = set(tag_spans(g)), set(tag_spans(p))
        counts["gold"].update(s[0] for s in gold_spans)
        counts["pred"].update(s[0] for s in pred_spans)
        counts["correct"].update(s[0] for s in gold_spans & pred_spans)
        tokens += len(g)
        right += sum(a == b for a, b in zip(g, p))
    per_type = {}
    for kind in sorted(counts["gold"].keys() | counts["pred"].keys()):
        per_type[kind] = _prf(counts["correct"][kind], counts["pred"][kind], counts["gold"][kind])
    total = _prf(sum(counts["correct"].values()), sum(counts["pred"].values()), sum(counts["gold"].values()))
    return {
        "task": "tagging",
        "sequences": len(gold),
        "precision": total["precision"],
        "recall": total["recall"],
        "f1": total["f1"],
        "gold_spans": total["support"],
        "predicted_spans": sum(counts["pred"].values()),
        "correct_spans": sum(counts["correct"].values()),
        "per_type": per_type,
        "token_accuracy": right / tokens if tokens else 0.0,
    }


def _prf(correct: int, predicted: int, gold: int) -> dict[str, Any]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    return {"precision": precision, "recall": recall, "f1": _f1(precision, recall), "support": gold}


# ---------------------------------------------------------------- language models


def language_model_metrics(loss_sum: float, token_count: int) -> dict[str, Any]:
    """Mean loss (nats per token) and perplexity exp(mean) from a summed loss over ``token_count`` tokens."""
    if token_count <= 0:
        raise ValueError(f"token_count must be positive, got {token_count}")
    if not math.isfinite(loss_sum):
        raise ValueError(f"loss_sum is not finite: {loss_sum}")
    mean = loss_sum / token_count
    perplexity = math.exp(mean) if mean < 709.0 else math.inf  # exp overflows a float64 past ~709.78
    return {"task": "language_model", "tokens": int(token_count), "loss": mean, "perplexity": perplexity}
