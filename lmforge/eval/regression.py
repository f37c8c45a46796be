"""Regression metrics: errors, R^2 and the two correlations (Pearson, Spearman) users compare by.
scikit-learn's and scipy's definitions; the tests check the parity."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["regression_metrics"]


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, Any]:
    """MSE, RMSE, MAE, R^2 (1 - SSE/SST; 0 when the targets are constant) and the Pearson and Spearman
    correlations (None when either side is constant, where they are undefined)."""
    from scipy.stats import pearsonr, spearmanr

    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)  # (N,) each
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be (N,) of one length, got {t.shape} and {p.shape}")
    err = p - t
    sst = float(((t - t.mean()) ** 2).sum()) if len(t) else 0.0
    varies = len(t) > 1 and np.ptp(t) > 0 and np.ptp(p) > 0
    mse = float((err ** 2).mean()) if len(t) else 0.0
    return {
        "task": "regression", "examples": len(t),
        "mse": mse, "rmse": mse ** 0.5, "mae": float(np.abs(err).mean()) if len(t) else 0.0,
        "r2": 1.0 - float((err ** 2).sum()) / sst if sst > 0 else 0.0,
        "pearson": float(pearsonr(t, p).statistic) if varies else None,
        "spearman": float(spearmanr(t, p).statistic) if varies else None,
    }
