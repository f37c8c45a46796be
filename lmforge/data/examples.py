"""Labelled examples of a prepared split, as fine-tuning trains on them and evaluation scores them.

Classification: ``text`` (and, for a text-pair task, a second text field) + a label field.
Tagging: one tag per character (BMES segmentation from chars/tags rows, BIO NER from words/pos rows,
via lmforge.data.tagged.read_tagged).
"""

from __future__ import annotations

from typing import Optional

from lmforge.config import ConfigError
from lmforge.data.prepared import iter_numbered, iter_split, split_file
from lmforge.data.tagged import detect_tag_task, read_tagged

__all__ = ["read_classification", "read_tagging"]


def read_classification(data: str, split: str, text_field: str, pair_field: Optional[str],
                        label_field: str = "label") -> tuple[list[str], list[Optional[str]], list[str]]:
    texts, pairs, labels = [], [], []
    path = split_file(data, split)
    for number, row in iter_numbered(path, text_field):
        if row.get(label_field) is None or row.get(text_field) is None:
            raise ConfigError(f"{path}:{number}: needs fields {text_field!r} and {label_field!r} for classification")
        if pair_field is not None and row.get(pair_field) is None:
            raise ConfigError(f"{path}:{number}: no {pair_field!r} (data.pair_field) for a text-pair task")
        texts.append(str(row[text_field]))
        pairs.append(str(row[pair_field]) if pair_field else None)
        labels.append(str(row[label_field]))
    return texts, pairs, labels


def read_tagging(data: str, split: str) -> tuple[list[str], list[list[str]]]:
    first = next(iter(iter_split(data, split)), None)
    task = detect_tag_task(first) if first is not None else None
    if task is None:
        raise ConfigError(f"{split_file(data, split)}: tagging needs rows with chars+tags (BMES) or words+pos (NER)")
    return read_tagged(data, split, task)
