"""Deterministic, grouped, stratified train/validation/test assignment.

Whole groups (documents too similar to be independent) go to one split. Groups are visited in
an order fixed by (seed, group id) alone, and each goes to the split furthest below its target
share within its label's stratum, so the result depends only on the data, the ratios and the seed.
"""

from __future__ import annotations

import numpy as np

from lmforge.data.minhash import splitmix64

SPLITS = ("train", "validation", "test")


def assign_splits(
    group: np.ndarray,
    strata: np.ndarray,
    ratios: tuple[float, float, float],
    seed: int,
) -> np.ndarray:
    """Split index (0 train, 1 validation, 2 test) per document.

    group: (N,) int64 group id per document; strata: (N,) int64 stratum (label id, or 0).
    A group's stratum is that of its first document.
    """
    n = group.shape[0]
    result = np.zeros(n, dtype=np.int8)
    if n == 0:
        return result
    group_ids, first, inverse, sizes = np.unique(group, return_index=True, return_inverse=True, return_counts=True)
    group_stratum = strata[first]
    keys = splitmix64(group_ids.astype(np.uint64) ^ splitmix64(np.array([seed], dtype=np.uint64)))  # visiting order
    target = np.asarray(ratios, dtype=np.float64)
    group_split = np.zeros(group_ids.shape[0], dtype=np.int8)
    for stratum in np.unique(group_stratum):
        members = np.flatnonzero(group_stratum == stratum)
        members = members[np.argsort(keys[members], kind="stable")]
        counts = np.zeros(3, dtype=np.float64)
        assigned = 0
        for g in members:
            size = int(sizes[g])
            deficit = target * (assigned + size) - counts  # how far each split is below its share
            choice = int(np.argmax(np.where(target > 0, deficit, -np.inf)))
            group_split[g] = choice
            counts[choice] += size
            assigned += size
    result[:] = group_split[inverse.reshape(-1)]
    return result
