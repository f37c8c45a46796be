"""Retrieval fine-tuning: an encoder trained as a bi-encoder on (query, passage) pairs with in-batch
negatives (every other passage of the batch is a negative of a query: InfoNCE, as sentence-transformers'
MultipleNegativesRankingLoss and DPR), optionally with one hard negative per pair
(``data.negative_field``) added to every query's candidates.

A text is embedded as the mean of its real tokens' final hidden states, L2-normalised, which is what
``Predictor.embed(normalize=True)``, `lmforge index` and `/v1/search` compute; the model directory this
writes has no task head, so every command that embeds reads it.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor, nn

from lmforge.finetune.data import Encoded, ExampleSource, collate
from lmforge.model.heads import mean_pool
from lmforge.train.objectives import ObjectiveOutput

__all__ = ["PairSource", "RetrievalObjective", "embed_batch", "encode_pairs"]


def _encode(tok: Tokenizer, texts: Sequence[str], max_length: int) -> Encoded:
    tok.enable_truncation(max_length)
    encs = tok.encode_batch(list(texts))
    return Encoded([e.ids for e in encs], [e.type_ids for e in encs], [0] * len(encs), [])


def encode_pairs(tok: Tokenizer, queries: Sequence[str], passages: Sequence[str],
                 negatives: Sequence[Optional[str]], max_length: int) -> tuple[Encoded, Encoded, Optional[Encoded]]:
    """Each side on its own (no [SEP] pairing: a bi-encoder embeds queries and passages separately)."""
    hard = _encode(tok, [n or "" for n in negatives], max_length) if any(n is not None for n in negatives) else None
    return _encode(tok, queries, max_length), _encode(tok, passages, max_length), hard


class PairSource(ExampleSource):
    """ExampleSource over queries (ordering, bucketing by query length, exact resume) whose batches carry
    each query's passage (and hard negative) too: keys ``input_ids``/``attention_mask`` (queries, B x Tq),
    ``passage_*`` (B x Tp) and ``negative_*``."""

    def __init__(self, queries: Encoded, passages: Encoded, negatives: Optional[Encoded], batch_size: int,
                 pad_id: int, **kw: Any) -> None:
        super().__init__(queries, batch_size, pad_id, **kw)
        self.passages, self.negatives = passages, negatives

    def collate(self, index: list[int]) -> dict[str, Tensor]:
        batch = collate(self.enc, index, self.pad_id)
        batch.pop("labels")
        for prefix, enc in (("passage", self.passages), ("negative", self.negatives)):
            if enc is not None:
                side = collate(enc, index, self.pad_id)
                batch.update({f"{prefix}_input_ids": side["input_ids"], f"{prefix}_attention_mask": side["attention_mask"]})
        return batch


def embed_batch(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """(B, T) ids -> (B, C) L2-normalised mean-pooled final hidden states. Through the model's own forward
    (a head-less TaskModel returns its hidden states), so a DDP wrapper sees the call and syncs gradients."""
    return F.normalize(mean_pool(model(ids, mask)["hidden"], mask).float(), dim=-1)


class RetrievalObjective:
    """Cross-entropy over the batch's passages (and hard negatives) for each query, with similarities
    the cosine over ``temperature`` (0.05, sentence-transformers' scale of 20). ``acc``: the share of
    queries whose own passage ranks first among the batch's candidates."""

    def __init__(self, temperature: float = 0.05) -> None:
        self.temperature = temperature

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> ObjectiveOutput:
        q = embed_batch(model, batch["input_ids"], batch["attention_mask"])  # (B, C)
        p = embed_batch(model, batch["passage_input_ids"], batch["passage_attention_mask"])  # (B, C)
        if "negative_input_ids" in batch:
            p = torch.cat([p, embed_batch(model, batch["negative_input_ids"], batch["negative_attention_mask"])])
        scores = q @ p.T / self.temperature  # (B, B) or (B, 2B): row i's positive is column i
        target = torch.arange(q.shape[0], device=q.device)
        loss = F.cross_entropy(scores, target, reduction="sum")
        n = torch.tensor(q.shape[0], device=q.device)
        correct = (scores.argmax(-1) == target).sum()
        return ObjectiveOutput(loss, n, {"task_correct": correct, "task_count": n}, {"acc": ("task_correct", "task_count")})
