"""A model directory's predictions on a prepared split, as evaluation-report rows (one model, or an
ensemble averaging several models' probabilities).

Scoring goes through the Predictor that `lmforge serve` answers with (lmforge.serve.predictor): the same
truncation (head or head+tail, as the model was fine-tuned), the same overlapping windows over long
tagged texts, the same batching; so a reported score is what the server answers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmforge.config import ConfigError
from lmforge.data.examples import read_classification, read_tagging
from lmforge.eval.rows import multilabel_row, prediction_row, regression_row, tagging_row
from lmforge.serve.predictor import Predictor, load

__all__ = ["model_rows", "model_row", "split_probabilities", "tag_predictions"]


def split_probabilities(predictor: Predictor, data: str | Path, split: str
                        ) -> tuple[list[Any], np.ndarray | list[np.ndarray], list[str]]:
    """(gold labels, probabilities, texts): (N, K) per example for classification (multi-label: each
    label's own probability; regression: (N, 1) predicted values); for tagging a list
    of (n_chars, K) arrays, read from each character's first sub-token. The fields to read are the
    ones the model was fine-tuned on (its config.json ``data``), else text/label."""
    d = predictor.config.get("data") or {}
    if predictor.model.task == "classification":
        kind = {"multi_label": "multi", "regression": "value"}.get(predictor.model.problem, "single")
        texts, pairs, gold = read_classification(str(data), split, d.get("text_field", "text"), d.get("pair_field"),
                                                 d.get("label_field", "label"), kind)  # type: ignore[arg-type]
        paired = d.get("pair_field") is not None
        probs = predictor.class_probabilities(texts, pairs if paired else None)  # type: ignore[arg-type]
        return gold, probs.numpy(), texts
    texts, tags = read_tagging(str(data), split)
    label_to_id = {name: i for i, name in enumerate(predictor.labels)}
    outside = label_to_id.get("O", label_to_id.get("S", 0))  # for a character the tokenizer drops
    probs = []
    for rows in predictor.tag_units(texts):
        rows = rows.numpy().copy()
        rows[rows.sum(-1) == 0, outside] = 1.0
        probs.append(rows)
    return tags, probs, texts


def tag_predictions(probs: Sequence[np.ndarray], labels: Sequence[str]) -> list[list[str]]:
    return [[labels[i] for i in p.argmax(-1)] for p in probs]


def method_name(config: dict[str, Any]) -> str:
    """The fine-tuning method a model directory came from (a merged LoRA model still says lora)."""
    return str(config.get("merged_from") or config.get("method") or "full")


def model_row(predictor: Predictor, data: str | Path, split: str, name: str, info: dict[str, Any]) -> dict[str, Any]:
    """One report row of a single model."""
    gold, probs, _ = split_probabilities(predictor, data, split)
    return _row(name, predictor, gold, probs, info)


def _row(name: str, predictor: Predictor, gold: Any, probs: Any, info: dict[str, Any]) -> dict[str, Any]:
    labels = predictor.labels
    problem = predictor.model.problem
    if problem == "multi_label":
        thresholds = predictor.thresholds
        return multilabel_row(name, gold, probs, labels, [thresholds[x] for x in labels], info=info)
    if problem == "regression":
        return regression_row(name, gold, probs[:, 0], info=info)
    if predictor.model.task == "classification":
        return prediction_row(name, gold, [labels[i] for i in probs.argmax(-1)], probs, labels, info=info)
    return tagging_row(name, gold, tag_predictions(probs, labels), info=info)


def model_rows(model_dirs: Sequence[str], data: str, split: str, name: str | None = None) -> list[dict[str, Any]]:
    """One report row per model dir; several dirs are averaged into one ensemble row (same task and labels)."""
    if not model_dirs:
        return []
    started = time.perf_counter()
    first: Predictor | None = None
    gold: Any = None
    total: Any = None
    for directory in model_dirs:
        predictor = load(directory)
        if predictor.model.task is None:
            raise ConfigError(f"{directory}: has no task head (a pretrained model); evaluate a fine-tuned one")
        if first is not None and (predictor.model.task, predictor.model.problem, predictor.labels) != (
                first.model.task, first.model.problem, first.labels):
            raise ConfigError(f"{directory}: task/labels differ from {model_dirs[0]}; cannot ensemble them")
        first = first or predictor
        gold, probs, _ = split_probabilities(predictor, data, split)
        total = probs if total is None else (total + probs if predictor.model.task == "classification"
                                             else [a + b for a, b in zip(total, probs)])
    assert first is not None
    n = len(model_dirs)
    probs = total / n if first.model.task == "classification" else [p / n for p in total]
    method = method_name(first.config)
    label = name or (f"lmforge {method}" if n == 1 else f"ensemble of {n}")
    info = {"models": [str(d) for d in model_dirs], "method": method,
            "predict_s": round(time.perf_counter() - started, 2), **first.config.get("report_info", {})}
    return [_row(label, first, gold, probs, info)]
