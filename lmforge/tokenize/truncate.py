"""Truncation that keeps both ends of an over-long text.

Reviews and other opinionated texts often state their verdict at the end; cutting everything after
``max_length`` tokens loses it. ``head+tail`` (Sun et al. 2019, "How to Fine-Tune BERT for Text
Classification") keeps the first quarter of the room and the last three quarters, dropping the middle.
Fine-tuning and the predictor both use this function, so a model sees at serving time exactly what it
saw in training.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal, Sequence

__all__ = ["Truncation", "HEAD_SHARE", "head_and_tail_ids", "head_and_tail_positions", "keep_head_and_tail"]

Truncation = Literal["head", "head+tail"]
HEAD_SHARE = 0.25  # of the room for content tokens; the tail gets the rest


def head_and_tail_positions(special_mask: Sequence[int], max_length: int) -> list[int]:
    """Positions of one untruncated single-text encoding to keep: its leading and trailing special
    tokens ([CLS] ... [SEP]), the first quarter of the room for content and the last three quarters."""
    n = len(special_mask)
    if n <= max_length:
        return list(range(n))
    lead = 0
    while lead < n and special_mask[lead]:
        lead += 1
    trail = 0
    while trail < n - lead and special_mask[n - 1 - trail]:
        trail += 1
    room = max_length - lead - trail
    if room <= 0:
        raise ValueError(f"max_length {max_length} leaves no room for text next to {lead + trail} special tokens")
    head = round(room * HEAD_SHARE)
    tail = room - head
    return [*range(lead + head), *range(n - trail - tail, n)]


def keep_head_and_tail(ids: Sequence[int], special_mask: Sequence[int], max_length: int) -> list[int]:
    """One untruncated single-text encoding's ids -> at most ``max_length`` of them, the middle cut out."""
    return [ids[i] for i in head_and_tail_positions(special_mask, max_length)]


def head_and_tail_ids(encodings: Iterable[Any], max_length: int) -> list[list[int]]:
    """Untruncated ``tokenizers`` Encodings -> their head+tail ids (what training and serving both feed)."""
    return [keep_head_and_tail(e.ids, e.special_tokens_mask, max_length) for e in encodings]
