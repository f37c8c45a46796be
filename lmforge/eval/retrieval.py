"""Retrieval evaluation: each query of a prepared text-pair split searches the split's passages; recall@k
(a passage paired with the query is among the top k) and MRR@10 (1 / rank of the first one, 0 beyond
10), for a bi-encoder (lmforge.serve.index, exact cosine) next to BM25 (the `bm25s` library).

A query that occurs with several passages has them all as its answers; the corpus is the split's distinct
passages, so a query of the test split never sees a train passage and vice versa.
"""

from __future__ import annotations

import re
import time
from itertools import pairwise
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lmforge.data.text import is_cjk
from lmforge.data.examples import read_pairs

__all__ = ["KS", "RetrievalSplit", "bm25_row", "model_retrieval_row", "retrieval_metrics", "retrieval_split",
           "search_tokens"]

KS = (1, 5, 10)


@dataclass
class RetrievalSplit:
    queries: list[str]  # distinct, in first-seen order
    corpus: list[str]  # distinct passages
    answers: list[set[int]]  # per query, the corpus positions paired with it


def retrieval_split(data: str, split: str, text_field: str = "text", pair_field: str = "pair") -> RetrievalSplit:
    queries, passages, _ = read_pairs(data, split, text_field, pair_field)
    q_pos: dict[str, int] = {}
    p_pos: dict[str, int] = {}
    answers: list[set[int]] = []
    for q, p in zip(queries, passages):
        if q not in q_pos:
            q_pos[q] = len(q_pos)
            answers.append(set())
        answers[q_pos[q]].add(p_pos.setdefault(p, len(p_pos)))
    return RetrievalSplit(list(q_pos), list(p_pos), answers)


def retrieval_metrics(ranked: Sequence[Sequence[int]], answers: Sequence[set[int]], corpus_size: int) -> dict[str, Any]:
    """recall@1/5/10 and MRR@10 of per-query rankings (corpus positions, best first, at least 10 or all)."""
    first = []  # 1-based rank of the first answer, 0 when none in the ranking
    for row, gold in zip(ranked, answers):
        hit = next((r + 1 for r, pos in enumerate(row) if int(pos) in gold), 0)
        first.append(hit)
    ranks = np.asarray(first)
    n = max(len(ranks), 1)
    out: dict[str, Any] = {"task": "retrieval", "examples": len(ranks), "corpus": corpus_size}
    for k in KS:
        out[f"recall@{k}"] = float(((ranks > 0) & (ranks <= k)).sum() / n)
    out["mrr@10"] = float(np.where((ranks > 0) & (ranks <= 10), 1.0 / np.maximum(ranks, 1), 0.0).sum() / n)
    return out


def search_tokens(text: str) -> list[str]:
    """BM25's terms: characters and character bigrams for CJK text (no spaces to split on), else
    lower-cased words."""
    if is_cjk(text):
        chars = [c for c in text if not c.isspace()]
        return chars + [a + b for a, b in pairwise(chars)]
    return re.findall(r"\w+", text.lower())


def bm25_row(split: RetrievalSplit) -> dict[str, Any]:
    import bm25s

    started = time.perf_counter()
    retriever = bm25s.BM25()
    retriever.index([search_tokens(t) or ["<empty>"] for t in split.corpus], show_progress=False)
    k = min(max(KS), len(split.corpus))
    ranked, _ = retriever.retrieve([search_tokens(q) or ["<empty>"] for q in split.queries], k=k, show_progress=False)
    metrics = retrieval_metrics(ranked.tolist(), split.answers, len(split.corpus))
    return {"name": "bm25", "kind": "baseline", "metrics": metrics,
            "info": {"library": "bm25s", "terms": "characters + bigrams (CJK), words otherwise",
                     "seconds": round(time.perf_counter() - started, 2)}}


def model_retrieval_row(predictor: Any, split: RetrievalSplit, name: str, kind: str = "model",
                        info: dict[str, Any] | None = None) -> dict[str, Any]:
    """A model's row: its normalised embeddings in the exact index that `lmforge index` builds."""
    from lmforge.serve.index import VectorIndex

    started = time.perf_counter()
    index = VectorIndex(np.asarray(predictor.embed(split.corpus, normalize=True)), split.corpus)
    _, ranked = index.search(np.asarray(predictor.embed(split.queries, normalize=True)), max(KS))
    metrics = retrieval_metrics(ranked.tolist(), split.answers, len(split.corpus))
    return {"name": name, "kind": kind, "metrics": metrics,
            "info": {**(info or {}), "seconds": round(time.perf_counter() - started, 2)}}
