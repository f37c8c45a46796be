"""Labelled examples of a prepared split, as fine-tuning trains on them and evaluation scores them.

Classification: ``text`` (and, for a text-pair task, a second text field) + a label field: one label, a
set of labels (multi-label) or a number (regression).
Tagging: one tag per character (BMES segmentation from chars/tags rows, BIO NER from words/pos rows,
via lmforge.data.tagged.read_tagged).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

from lmforge.config import ConfigError
from lmforge.data.prepared import iter_numbered, iter_split, split_file
from lmforge.data.tagged import detect_tag_task, read_tagged

__all__ = ["LabelKind", "read_classification", "read_pairs", "read_tagging", "subset_indices"]


LabelKind = Literal["single", "multi", "value"]


def subset_indices(n: int, k: Optional[int], seed: int) -> list[int]:
    """A seeded random ``k`` of ``n`` examples in file order (all when k is None or >= n): the same subset
    for fine-tuning (data.max_train_examples) and its baselines (report.max_train_examples)."""
    if k is None or k >= n:
        return list(range(n))
    import numpy as np

    return np.sort(np.random.default_rng(seed).permutation(n)[:k]).tolist()


def read_classification(data: str, split: str, text_field: str, pair_field: Optional[str],
                        label_field: str = "label", kind: LabelKind = "single"
                        ) -> tuple[list[str], list[Optional[str]], list[Any]]:
    """(texts, pairs, labels). ``kind``: one label name per text (str); a set of label names (a JSON
    list, possibly empty, or one name), returned as a sorted list; or a number (regression), as float."""
    texts, pairs, labels = [], [], []
    path = split_file(data, split)
    for number, row in iter_numbered(path, text_field):
        if row.get(label_field) is None or row.get(text_field) is None:
            raise ConfigError(f"{path}:{number}: needs fields {text_field!r} and {label_field!r} for classification")
        if pair_field is not None and row.get(pair_field) is None:
            raise ConfigError(f"{path}:{number}: no {pair_field!r} (data.pair_field) for a text-pair task")
        texts.append(str(row[text_field]))
        pairs.append(str(row[pair_field]) if pair_field else None)
        labels.append(_label(row[label_field], kind, f"{path}:{number}: {label_field!r}"))
    return texts, pairs, labels


def _label(value: Any, kind: LabelKind, where: str) -> Any:
    if kind == "single":
        return str(value)
    if kind == "multi":
        names = value if isinstance(value, list) else [value]
        if not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in names):
            raise ConfigError(f"{where} is {value!r}; a multi-label task needs a list of label names")
        return sorted({str(x) for x in names})
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where} is {value!r}; a regression task needs a number")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{where} is {value!r}; a regression task needs a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where} is {value!r}; a regression task needs a finite number")
    return number


def read_pairs(data: str, split: str, text_field: str, pair_field: Optional[str],
               negative_field: Optional[str] = None) -> tuple[list[str], list[str], list[Optional[str]]]:
    """(queries, positive passages, hard negatives or None) of a prepared text-pair split."""
    if not pair_field:
        raise ConfigError(f"{data}: task=retrieval needs text pairs (query, passage): prepare the data with "
                          f"--pair-field, or set data.pair_field")
    path = split_file(data, split)
    queries, passages, negatives = [], [], []
    for number, row in iter_numbered(path, text_field):
        if row.get(text_field) is None or row.get(pair_field) is None:
            raise ConfigError(f"{path}:{number}: needs fields {text_field!r} and {pair_field!r} for retrieval")
        if negative_field is not None and row.get(negative_field) is None:
            raise ConfigError(f"{path}:{number}: no {negative_field!r} (data.negative_field)")
        queries.append(str(row[text_field]))
        passages.append(str(row[pair_field]))
        negatives.append(str(row[negative_field]) if negative_field else None)
    return queries, passages, negatives


def read_tagging(data: str, split: str) -> tuple[list[str], list[list[str]]]:
    first = next(iter(iter_split(data, split)), None)
    task = detect_tag_task(first) if first is not None else None
    if task is None:
        raise ConfigError(f"{split_file(data, split)}: tagging needs rows with chars+tags (BMES) or words+pos (NER)")
    return read_tagged(data, split, task)
