"""Predictions of fine-tuned models on a prepared split, as evaluation-report rows (one model, or an
ensemble averaging several models' probabilities)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmforge.config import ConfigError
from lmforge.finetune.data import (
    ExampleSource,
    chunk_units,
    encode_classification,
    encode_tagging,
    read_classification,
    read_tagging,
)
from lmforge.eval.rows import prediction_row, tagging_row
from lmforge.finetune.modeldir import load_task_model, load_tokenizer, pad_id, predict
from lmforge.model.heads import TaskModel

__all__ = ["model_rows", "split_probabilities", "tag_predictions"]


def split_probabilities(model: TaskModel, meta: dict[str, Any], tokenizer_dir: str | Path, data: str, split: str,
                        batch_size: int = 64) -> tuple[list[Any], np.ndarray | list[np.ndarray], list[str]]:
    """(gold labels, probabilities, texts): (N, K) per example for classification; for tagging a list
    of (n_chars, K) arrays, read from each character's first sub-token."""
    tok = load_tokenizer(tokenizer_dir)
    d = meta["data"]
    max_length = min(d["max_length"], model.config.max_positions)
    if meta["task"] == "classification":
        texts, pairs, gold = read_classification(data, split, d["text_field"], d.get("pair_field"), d["label_field"])
        known = [g if g in model.label_to_id else model.labels[0] for g in gold]  # unseen gold labels still count
        enc = encode_classification(tok, texts, pairs, known, model.label_to_id, max_length,
                                    d.get("truncation", "head"))
        source = ExampleSource(enc, batch_size, pad_id(tok), shuffle=False, drop_last=False)
        return gold, np.concatenate(predict(model, source)), texts
    texts, tags = read_tagging(data, split)
    windows, window_tags, owner = chunk_units(texts, tags, max_length - 2)  # no character lost to truncation
    enc = encode_tagging(tok, windows, window_tags, model.label_to_id, max_length)
    source = ExampleSource(enc, batch_size, pad_id(tok), shuffle=False, drop_last=False)
    K = len(model.labels)
    fallback = np.zeros(K)
    fallback[model.label_to_id.get("O", model.label_to_id.get("S", 0))] = 1.0  # a character cut off anyway
    pieces: list[list[np.ndarray]] = [[] for _ in texts]
    w = 0
    for batch_probs in predict(model, source):
        for row in batch_probs:
            first = enc.first_token[w]
            pieces[owner[w]].append(np.stack([row[i] if i >= 0 else fallback for i in first]) if first
                                    else np.zeros((0, K)))
            w += 1
    probs = [np.concatenate(p) if p else np.zeros((0, K)) for p in pieces]
    return tags, probs, texts


def tag_predictions(probs: Sequence[np.ndarray], labels: Sequence[str]) -> list[list[str]]:
    return [[labels[i] for i in p.argmax(-1)] for p in probs]


def model_rows(model_dirs: Sequence[str], data: str, split: str, name: str | None = None) -> list[dict[str, Any]]:
    """One report row per model dir; several dirs are averaged into one ensemble row (same task and labels)."""
    if not model_dirs:
        return []
    started = time.perf_counter()
    gold: Any = None
    total: Any = None
    first_meta: dict[str, Any] = {}
    for directory in model_dirs:
        model, meta = load_task_model(directory)
        if first_meta and (meta["task"], meta["labels"]) != (first_meta["task"], first_meta["labels"]):
            raise ConfigError(f"{directory}: task/labels differ from {model_dirs[0]}; cannot ensemble them")
        first_meta = first_meta or meta
        gold, probs, _ = split_probabilities(model, meta, directory, data, split)
        total = probs if total is None else (total + probs if meta["task"] == "classification"
                                             else [a + b for a, b in zip(total, probs)])
    labels = first_meta["labels"]
    if meta["task"] == "classification":
        probs = total / len(model_dirs)
    else:
        probs = [p / len(model_dirs) for p in total]
    label = name or (f"lmforge {first_meta['method']}" if len(model_dirs) == 1 else f"ensemble of {len(model_dirs)}")
    info = {"models": [str(d) for d in model_dirs], "method": first_meta["method"],
            "predict_s": round(time.perf_counter() - started, 2), **first_meta.get("report_info", {})}
    if first_meta["task"] == "classification":
        pred = [labels[i] for i in probs.argmax(-1)]
        return [prediction_row(label, gold, pred, probs, labels, info=info)]
    return [tagging_row(label, gold, tag_predictions(probs, labels), info=info)]
