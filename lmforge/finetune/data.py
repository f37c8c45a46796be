"""Labelled examples for fine-tuning (read by lmforge.data.examples): encode with the model's tokenizer, batch.

Tagging: characters are fed pre-split; a character cut into
several sub-tokens carries its tag on the first one and IGNORE on the rest, and predictions are read
back from first sub-tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Sequence

import torch
from tokenizers import Tokenizer
from torch import Tensor

from lmforge.batch_order import BatchOrder
from lmforge.config import ConfigError
from lmforge.model.heads import Problem
from lmforge.tokenize.prompt import PromptTemplate
from lmforge.tokenize.tokenizer import load_tokenizer, special_token_ids
from lmforge.tokenize.truncate import Truncation, head_and_tail_ids
from lmforge.train.objectives import IGNORE

__all__ = ["Encoded", "ExampleSource", "chunk_units", "collate", "encode_classification", "encode_tagging", "encoding_tokenizer",
           "pad_id"]


@dataclass
class Encoded:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list[Any]  # per example: a class id, a multi-hot list, a value, or per-token lists with IGNORE
    first_token: list[list[int]]  # tagging: token index of each character's first sub-token (-1: truncated)
    target: Literal["index", "multi_hot", "value", "tags"] = "index"  # what ``labels`` holds (collate's dtype)
    scale: tuple[float, float] = (0.0, 1.0)  # value targets: labels are (y - mean) / std with (mean, std)


def chunk_units(texts: Sequence[str], tags: Sequence[Sequence[str]], size: int) -> tuple[list[str], list[list[str]], list[int]]:
    """Cut tagged texts into windows of at most ``size`` units so no character is lost to truncation
    (most People's Daily sentences are longer than a small model's positions); returns the windows,
    their tags and, per window, the index of the text it came from (to stitch predictions back)."""
    out_texts: list[str] = []
    out_tags: list[list[str]] = []
    owner: list[int] = []
    for i, (text, row) in enumerate(zip(texts, tags)):
        for start in range(0, max(len(text), 1), size):
            out_texts.append(text[start : start + size])
            out_tags.append(list(row[start : start + size]))
            owner.append(i)
    return out_texts, out_tags, owner


def encode_classification(tok: Tokenizer, texts: Sequence[str], pairs: Sequence[Optional[str]],
                          labels: Sequence[Any], label_to_id: dict[str, int], max_length: int,
                          truncation: Truncation = "head", problem: Problem = "single_label",
                          standardise: tuple[float, float] = (0.0, 1.0),
                          prompt: Optional[PromptTemplate] = None) -> Encoded:
    """Text pairs are always cut longest-first (the tokenizer's rule); ``head+tail`` applies to single texts.
    With a ``prompt`` (prompt-based classification) each example is read inside its template, as the
    predictor reads it.
    Targets by ``problem``: a class id (a label None, unlabelled text learnt from a teacher only, becomes
    IGNORE); a multi-hot list over ``label_to_id`` (label sets); a value, (y - mean) / std with
    ``standardise`` = (mean, std) of the train split (regression)."""
    targets, kind = _targets(labels, label_to_id, problem, standardise)
    paired = any(p is not None for p in pairs)
    if prompt is not None:
        tok.no_truncation()  # the template cuts the texts itself
        try:
            encs = prompt.encode(tok, texts, pairs if paired else None, max_length, truncation)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return Encoded([e.ids for e in encs], [[0] * len(e.ids) for e in encs], targets, [], kind, standardise)
    if truncation == "head+tail" and not paired:
        tok.no_truncation()
        ids = head_and_tail_ids(tok.encode_batch(list(texts)), max_length)
        return Encoded(ids, [[0] * len(row) for row in ids], targets, [], kind, standardise)
    tok.enable_truncation(max_length)
    encs = tok.encode_batch(list(zip(texts, pairs)) if paired else list(texts))
    return Encoded([e.ids for e in encs], [e.type_ids for e in encs], targets, [], kind, standardise)


def _targets(labels: Sequence[Any], label_to_id: dict[str, int], problem: Problem,
             standardise: tuple[float, float]) -> tuple[list[Any], Literal["index", "multi_hot", "value"]]:
    if problem == "regression":
        mean, std = standardise
        return [(float(y) - mean) / std for y in labels], "value"
    names = {x for row in labels for x in row} if problem == "multi_label" else set(labels) - {None}
    unknown = sorted(names - set(label_to_id))
    if unknown:
        raise ConfigError(f"labels {unknown} are not among the model's labels {list(label_to_id)}")
    if problem == "multi_label":
        rows = []
        for row in labels:
            hot = [0.0] * len(label_to_id)
            for name in row:
                hot[label_to_id[name]] = 1.0
            rows.append(hot)
        return rows, "multi_hot"
    return [IGNORE if x is None else label_to_id[x] for x in labels], "index"


def encode_tagging(tok: Tokenizer, units: Sequence[Sequence[str]], tags: Sequence[Sequence[str]],
                   label_to_id: dict[str, int], max_length: int) -> Encoded:
    """``units``: the tagged units of each example (characters for Chinese; a str counts as its characters)."""
    tok.enable_truncation(max_length)
    encs = tok.encode_batch([list(u) for u in units], is_pretokenized=True)
    ids, types, labels, firsts = [], [], [], []
    for enc, text, row_tags in zip(encs, units, tags):
        first = [-1] * len(text)
        row_labels = [IGNORE] * len(enc.ids)
        for pos, word in enumerate(enc.word_ids):
            if word is not None and first[word] < 0:  # label on the first sub-token only
                first[word] = pos
                row_labels[pos] = label_to_id.get(row_tags[word], IGNORE)
        ids.append(enc.ids)
        types.append(enc.type_ids)
        labels.append(row_labels)
        firsts.append(first)
    return Encoded(ids, types, labels, firsts, "tags")


def collate(enc: Encoded, index: Sequence[int], pad_id: int) -> dict[str, Tensor]:
    """Dynamic padding (right side) to the longest example of the batch."""
    T = max(len(enc.input_ids[i]) for i in index)
    B = len(index)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    types = torch.zeros((B, T), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    tagging = enc.target == "tags"
    if tagging:
        labels = torch.full((B, T), IGNORE, dtype=torch.long)  # (B, T)
    elif enc.target == "multi_hot":
        labels = torch.tensor([enc.labels[i] for i in index], dtype=torch.float32)  # (B, K)
    else:  # a class id (B,) long, or a standardised value (B,) float
        labels = torch.tensor([enc.labels[i] for i in index],
                              dtype=torch.float32 if enc.target == "value" else torch.long)
    for row, i in enumerate(index):
        n = len(enc.input_ids[i])
        ids[row, :n] = torch.tensor(enc.input_ids[i])
        types[row, :n] = torch.tensor(enc.token_type_ids[i])
        mask[row, :n] = 1
        if tagging:
            labels[row, :n] = torch.tensor(enc.labels[i])
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels}


class ExampleSource(BatchOrder):
    """Batches of encoded examples, shuffled per epoch with ``seed + epoch``; resumable exactly
    (``state_dict`` records epoch and position), as the training loop's BatchSource contract asks.

    Shuffled batches are length-bucketed: each run of ``bucket`` batches' worth of shuffled examples is
    sorted by length and cut into batches, and the batches are then shuffled. On CPU the cost follows
    padded tokens, and review lengths are heavy-tailed (median ~32 tokens, some 128), so random batches
    would pad most examples to the longest; ``bucket=1`` turns this off.

    Under torchrun ``batch_size`` is per process, as in pretraining: every rank computes the same order
    of global batches (``batch_size * world_size`` examples) and takes its share (``index[rank::world_size]``);
    the loop normalises gradients by the global number of labelled units, so N processes take the
    steps one process takes with N times the batch size."""

    def __init__(self, enc: Encoded, batch_size: int, pad_id: int, *, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True, bucket: int = 50, rank: int = 0, world_size: int = 1) -> None:
        n = len(enc.input_ids)
        batch_size *= world_size  # the global batch
        if n == 0 or (drop_last and n < batch_size):
            raise ConfigError(f"{n} examples: fewer than one batch of {batch_size}")
        super().__init__(seed, rank, world_size)
        self.enc, self.batch_size, self.pad_id = enc, batch_size, pad_id
        self.shuffle, self.drop_last, self.bucket = shuffle, drop_last, bucket

    def __len__(self) -> int:
        n = len(self.enc.input_ids)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> list[int]:
        n = len(self.enc.input_ids)
        if not self.shuffle:
            return list(range(n))
        gen = torch.Generator().manual_seed(self.epoch_seed())
        order = torch.randperm(n, generator=gen).tolist()
        if self.bucket <= 1:
            return order
        size, span = self.batch_size, self.batch_size * self.bucket
        by_length = [j for a in range(0, n, span)
                     for j in sorted(order[a:a + span], key=lambda i: len(self.enc.input_ids[i]))]
        batches = [by_length[a:a + size] for a in range(0, n, size)]
        partial = batches.pop() if len(batches[-1]) < size else []  # only the very last can be short
        shuffled = [batches[k] for k in torch.randperm(len(batches), generator=gen).tolist()]
        return [j for batch in shuffled for j in batch] + partial

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        epoch, order = self.epoch, self._order()
        while self.position < len(self):
            index = order[self.position * self.batch_size : (self.position + 1) * self.batch_size]
            self.position += 1
            mine = self.strided_share(index)  # this rank's share of the global batch
            if mine:  # (only a last, partial validation batch can leave a rank without one)
                yield self.collate(list(mine))
        self.finish(epoch)

    def collate(self, index: list[int]) -> dict[str, Tensor]:
        return collate(self.enc, index, self.pad_id)

    def state_dict(self) -> dict[str, Any]:
        return self.state("examples", n_examples=len(self.enc.input_ids))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.restore(state, "examples", defaults={"world_size": 1}, n_examples=len(self.enc.input_ids))  # older: 1


def encoding_tokenizer(path: str | Path) -> Tokenizer:
    """A model's tokenizer (its directory or tokenizer.json) without padding or truncation of its own:
    the encoders cut at data.max_length and collate pads per batch."""
    path = Path(path) / "tokenizer.json" if Path(path).is_dir() else Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no tokenizer.json")
    return load_tokenizer(path).tokenizer


def pad_id(tok: Tokenizer) -> int:
    """Padding id; a decoder tokenizer without [PAD] pads with its end-of-text token (GPT-2's habit),
    and last-token pooling reads the attention mask, so the pad id never changes a prediction."""
    found: Optional[int] = special_token_ids(tok)["pad"]
    return 0 if found is None else int(found)
