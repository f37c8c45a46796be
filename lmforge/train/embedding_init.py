"""Count-based token embeddings to start pretraining from: PPMI + truncated SVD of the corpus's
co-occurrence matrix (Levy, Goldberg & Dagan 2015).

A transformer pretrained for minutes on a CPU spends most of them learning what a token's neighbours
say about it; the co-occurrence counts of the same training tokens say much of that in seconds of
sparse linear algebra. Tokens with similar contexts ("不错", "很好", "还不错") start close together,
which masked LM then refines and a short fine-tuning can use at once.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

__all__ = ["cooccurrence", "ppmi", "svd_embeddings", "ppmi_svd_embeddings", "shard_documents", "init_token_embeddings"]


def cooccurrence(documents: Iterable[np.ndarray], vocab_size: int, window: int) -> sp.csr_matrix:
    """Symmetric counts C[a, b] of token b within ``window`` positions of token a, inside one document.

    documents: arrays of token ids; returns a (V, V) float64 CSR matrix (pairs at distance d counted once
    in each direction).
    """
    rows, cols = [], []
    for doc in documents:
        doc = np.asarray(doc, dtype=np.int64)
        for distance in range(1, window + 1):
            if len(doc) > distance:
                rows.append(doc[:-distance])
                cols.append(doc[distance:])
    if not rows:
        return sp.csr_matrix((vocab_size, vocab_size))
    a, b = np.concatenate(rows), np.concatenate(cols)
    if a.max(initial=0) >= vocab_size or b.max(initial=0) >= vocab_size:
        raise ValueError(f"token id {max(a.max(), b.max())} is outside the vocabulary of {vocab_size}")
    ones = np.ones(len(a))
    counts = sp.coo_matrix((ones, (a, b)), shape=(vocab_size, vocab_size)).tocsr()  # duplicates summed
    return (counts + counts.T).tocsr()


def ppmi(counts: sp.csr_matrix, context_power: float = 0.75) -> sp.csr_matrix:
    """Positive pointwise mutual information, max(0, log P(a, b) / (P(a) P_alpha(b))), with the context
    distribution raised to ``context_power`` (word2vec's smoothing, which keeps rare contexts from
    dominating). Zero counts stay zero: the result is as sparse as the counts."""
    coo = counts.tocoo()
    total = coo.data.sum()
    if total == 0:
        return sp.csr_matrix(counts.shape)
    word = np.asarray(counts.sum(1)).ravel()  # (V,)
    context = np.asarray(counts.sum(0)).ravel() ** context_power
    context = context / context.sum()
    pmi = np.log(coo.data / total / (word[coo.row] / total * context[coo.col]))
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=counts.shape)


def svd_embeddings(matrix: sp.csr_matrix, dim: int, seed: int = 0) -> np.ndarray:
    """(V, dim) rows U * sqrt(S) of the rank-``dim`` truncated SVD (symmetric weighting of the factors)."""
    from sklearn.utils.extmath import randomized_svd

    if dim >= min(matrix.shape):
        raise ValueError(f"embedding width {dim} must be below the vocabulary size {min(matrix.shape)}")
    u, s, _ = randomized_svd(matrix, dim, random_state=seed)
    return u * np.sqrt(s)


def shard_documents(shards_dir: str, split: str = "train") -> Iterable[np.ndarray]:
    """The token ids of every document of one split of a `lmforge data tokenize` output."""
    from lmforge.tokenize.shards import ShardReader

    reader = ShardReader(shards_dir, split)
    return (reader.document(i) for i in range(len(reader)))


def ppmi_svd_embeddings(documents: Iterable[np.ndarray], vocab_size: int, dim: int, window: int = 4,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (V, dim), seen (V,) bool): count-based vectors for the tokens that occur."""
    counts = cooccurrence(documents, vocab_size, window)
    seen = np.asarray(counts.sum(1)).ravel() > 0
    return svd_embeddings(ppmi(counts), dim, seed), seen


def init_token_embeddings(table: nn.Embedding, vectors: np.ndarray, seen: np.ndarray, std: float) -> int:
    """Copy ``vectors`` into the rows of ``table`` for the tokens ``seen`` in the corpus, rescaled so
    their standard deviation is ``std`` (the model's init scale: the rest of the network expects
    embeddings of that size). Unseen tokens keep their random rows. Returns how many rows were set."""
    chosen = vectors[seen]
    if not len(chosen) or chosen.std() == 0:
        return 0
    scaled = torch.from_numpy(chosen / chosen.std() * std).to(table.weight.dtype)
    with torch.no_grad():
        table.weight[torch.from_numpy(np.flatnonzero(seen))] = scaled
    return int(seen.sum())
