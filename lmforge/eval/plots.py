"""Report plots as PNG files: confusion matrix, per-class bars, training curves (matplotlib, Agg).

Agg renders without a display, so reports are written the same on a laptop, a server or in CI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import font_manager  # noqa: E402

__all__ = ["plot_confusion_matrix", "plot_curves", "plot_per_class"]

_CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "SimHei")


def _setup_fonts() -> None:
    """Fall back to an installed CJK font, if any, so Chinese class names are not drawn as boxes."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    fallbacks = [name for name in _CJK_FONTS if name in installed]
    plt.rcParams["font.sans-serif"] = ["DejaVu Sans", *fallbacks]
    plt.rcParams["font.family"] = "sans-serif"


_setup_fonts()


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # keeps a legend placed outside the axes
    plt.close(fig)
    return path


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str, path: Path
) -> Path:
    """Counts with row-normalised colour (recall per true class), so rare classes stay visible."""
    cm = np.asarray(matrix, dtype=np.float64)  # (K, K) rows true, columns predicted
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)  # (K, K)
    size = 2.2 + 0.55 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(
        range(len(labels)),
        labels,
        rotation=45 if len(labels) > 4 else 0,
        ha="right" if len(labels) > 4 else "center",
    )
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(labels) <= 20:  # numbers become unreadable beyond this
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                colour = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, f"{int(cm[i, j]):,}", ha="center", va="center", color=colour, fontsize=9)
    return _save(fig, path)


def plot_per_class(rows: Sequence[tuple[str, dict[str, dict[str, float]]]], path: Path) -> Path:
    """One panel per score (precision, recall, F1); per class, one bar for each report row."""
    classes = list(dict.fromkeys(c for _, per_class in rows for c in per_class))
    fig, axes = plt.subplots(1, 3, figsize=(max(8.0, 3.0 + 0.9 * len(classes) * len(rows)), 3.6), sharey=True)
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(classes))
    for ax, score in zip(axes, ("precision", "recall", "f1")):
        for n, (name, per_class) in enumerate(rows):
            values = [per_class.get(c, {}).get(score, 0.0) for c in classes]
            ax.bar(x + (n - (len(rows) - 1) / 2) * width, values, width, label=name)
        ax.set_xticks(x, classes, rotation=45 if len(classes) > 4 else 0)
        ax.set_ylim(0, 1.05)
        ax.set_title({"f1": "F1"}.get(score, score))
        ax.grid(axis="y", alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: never hides a bar
    return _save(fig, path)


def plot_curves(curves: dict[str, tuple[list[int], list[float]]], path: Path, metric: str = "loss") -> Path:
    """Training and validation curves against the optimizer step."""
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    styles = {"train": {"alpha": 0.8, "linewidth": 1.0}, "validation": {"marker": "o", "linewidth": 1.5}}
    for split, (steps, values) in curves.items():
        ax.plot(steps, values, label=split, **styles.get(split, {}))
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} during training")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
