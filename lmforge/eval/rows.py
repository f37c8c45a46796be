"""Report rows: one dict per scored system (model or baseline) with its name, kind, metrics and info.
Every scorer (baselines, taggers, fine-tuned models, language models) builds its row here."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from lmforge.eval.metrics import classification_metrics, language_model_metrics, span_metrics
from lmforge.eval.multilabel import multilabel_metrics
from lmforge.eval.regression import regression_metrics

__all__ = ["language_model_row", "multilabel_row", "prediction_row", "regression_row", "tagging_row"]


def prediction_row(
    name: str,
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    probabilities: Optional[np.ndarray] = None,
    labels: Optional[Sequence[Any]] = None,
    *,
    kind: str = "model",
    ece_bins: int = 15,
    info: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """One report row for a classifier: its name, kind (model | baseline), metrics and free-form info.

    ``probabilities`` is (N, K) with columns in ``labels`` order; without it, ECE is left out.
    """
    metrics = classification_metrics(y_true, y_pred, probabilities, labels, n_bins=ece_bins)
    return {"name": name, "kind": kind, "metrics": metrics, "info": dict(info or {})}


def multilabel_row(name: str, gold: Sequence[Sequence[str]], probabilities: np.ndarray, labels: Sequence[str],
                   thresholds: Optional[Sequence[float]] = None, *, kind: str = "model",
                   info: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """One report row for a multi-label classifier: (N, K) per-label probabilities against label sets."""
    return {"name": name, "kind": kind, "metrics": multilabel_metrics(gold, probabilities, labels, thresholds),
            "info": dict(info or {})}


def regression_row(name: str, gold: Sequence[float], predicted: Sequence[float], *, kind: str = "model",
                   info: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """One report row for a regressor: errors, R^2 and correlations."""
    return {"name": name, "kind": kind, "metrics": regression_metrics(gold, predicted), "info": dict(info or {})}


def tagging_row(
    name: str,
    gold: Sequence[Sequence[str]],
    predicted: Sequence[Sequence[str]],
    *,
    kind: str = "model",
    info: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """One report row for a tagger (BIO or BMES tag sequences per text): span precision/recall/F1."""
    return {"name": name, "kind": kind, "metrics": span_metrics(gold, predicted), "info": dict(info or {})}


def language_model_row(
    name: str,
    loss_sum: float,
    token_count: int,
    *,
    kind: str = "model",
    info: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """One report row for a language model: mean loss and perplexity over ``token_count`` tokens."""
    metrics = language_model_metrics(loss_sum, token_count)
    return {"name": name, "kind": kind, "metrics": metrics, "info": dict(info or {})}
