"""Truncation that keeps both ends of an over-long text.

Reviews and other opinionated texts often state their verdict at the end; cutting everything after
``max_length`` tokens loses it. ``head+tail`` (Sun et al. 2019, "How to Fine-Tune BERT for Text
Classification") keeps the first quarter of the room and the last three quarters, dropping the middle.
Fine-tuning and the predictor both use this function, so a model sees at serving time exactly what it
saw in training.
"""

from __future__ import annotations

from typing import Literal, Sequence

__all__ = ["Truncation", "HEAD_SHARE", "keep_head_and_tail"]

Truncation = Literal["head", "head+tail"]
HEAD_SHARE = 0.25  # of the room for content tokens; the tail gets the rest


def keep_head_and_tail(ids: Sequence[int], special_mask: Sequence[int], max_length: int) -> list[int]:
    """One untruncated single-text encoding -> at most ``max_length`` ids: its leading and trailing
    special tokens ([CLS] ... [SEP]) kept, the content's middle cut out."""
    if len(ids) <= max_length:
        return list(ids)
    lead = 0
    while lead < len(ids) and special_mask[lead]:
        lead += 1
    trail = 0
    while trail < len(ids) - lead and special_mask[len(ids) - 1 - trail]:
        trail += 1
    room = max_length - lead - trail
    if room <= 0:
        raise ValueError(f"max_length {max_length} leaves no room for text next to {lead + trail} special tokens")
    head = round(room * HEAD_SHARE)
    tail = room - head
    content = ids[lead:len(ids) - trail]
    return [*ids[:lead], *content[:head], *content[len(content) - tail:], *ids[len(ids) - trail:]]
