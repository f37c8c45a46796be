"""Exact and near-duplicate detection over compact per-document state (hashes and signatures).

One LSH index, tuned to the lower of the two similarity levels, proposes candidate pairs; each
pair's Jaccard (estimated from signatures, or exact from shingles) decides which edges it gives:
    J >= dedup.threshold        -> same duplicate cluster: one member kept, the rest removed
    J >= split.group_threshold  -> same split group: kept, but never on both sides of a split
Components are found by min-label propagation, so every cluster's id is its first document in
read order and the result does not depend on the order edges were found in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from lmforge.data.minhash import band_keys, estimated_jaccard

KEEP, EXACT_DUPLICATE, NEAR_DUPLICATE, LABEL_CONFLICT = 0, 1, 2, 3
_PAIR_BATCH = 65536


@dataclass
class DedupResult:
    status: np.ndarray  # (N,) int8: KEEP / EXACT_DUPLICATE / NEAR_DUPLICATE / LABEL_CONFLICT
    cluster: np.ndarray  # (N,) int64: first document of the duplicate cluster
    cluster_size: np.ndarray  # (N,) int64: size of that cluster
    group: np.ndarray  # (N,) int64: first document of the split group (clusters joined at group_threshold)
    stats: dict = field(default_factory=dict)


def connected_components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Label of each node = smallest node index in its component (edges u[i]-v[i])."""
    parent = np.arange(n, dtype=np.int64)
    if u.size == 0:
        return parent
    while True:
        pu, pv = parent[u], parent[v]
        if np.array_equal(pu, pv):
            return parent
        low = np.minimum(pu, pv)
        np.minimum.at(parent, pu, low)  # hook each root under the smaller label
        np.minimum.at(parent, pv, low)
        while True:  # pointer jumping until every node points at a root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def candidate_pairs(keys: np.ndarray, members: np.ndarray) -> np.ndarray:
    """(P, 2) unique pairs (i < j) of ``members`` sharing a key in at least one band.

    Each bucket contributes its members paired with the bucket's first member and with their
    predecessor: linear in bucket size, yet connecting the whole bucket.
    """
    pairs = []
    for band in range(keys.shape[1]):
        order = np.argsort(keys[:, band], kind="stable")
        sorted_keys = keys[order, band]
        same_as_prev = np.concatenate(([False], sorted_keys[1:] == sorted_keys[:-1]))
        if not same_as_prev.any():
            continue
        run_start = np.maximum.accumulate(np.where(~same_as_prev, np.arange(order.size), 0))
        idx = np.flatnonzero(same_as_prev)
        ids = members[order]
        pairs.append(np.stack([ids[run_start[idx]], ids[idx]], axis=1))
        pairs.append(np.stack([ids[idx - 1], ids[idx]], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    allp = np.concatenate(pairs)
    allp = np.sort(allp, axis=1)
    allp = allp[allp[:, 0] != allp[:, 1]]
    return np.unique(allp, axis=0)


def find_duplicates(
    exact_hashes: np.ndarray,
    signatures: Optional[np.ndarray],
    labels: Optional[np.ndarray],
    *,
    threshold: float,
    group_threshold: float,
    bands: int,
    rows: int,
    exact: bool = True,
    near: bool = True,
    exact_pairs: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    group_keys: Optional[np.ndarray] = None,
) -> DedupResult:
    """Clusters, split groups and label conflicts for N documents.

    exact_hashes: (N,) uint64 hashes of normalised text; signatures: (N, num_perm) uint32;
    labels: (N,) int64 label ids or None; exact_pairs: (P, 2) pairs -> (P,) exact Jaccard
    (only for exact verification; prepare runs it in its worker processes); group_keys: (N, K)
    uint64, documents sharing any key share a split group (text pairs: each side's exact hash, so
    the same question paired with different candidates never sits in two splits).
    """
    n = exact_hashes.shape[0]
    stats: dict = {"documents": int(n)}
    edge_u, edge_v = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    exact_first = np.arange(n, dtype=np.int64)
    if exact and n:
        _, first_index, inverse = np.unique(exact_hashes, return_index=True, return_inverse=True)
        exact_first = first_index[inverse.reshape(-1)].astype(np.int64)
        dup = np.flatnonzero(exact_first != np.arange(n))
        edge_u.append(dup)
        edge_v.append(exact_first[dup])
    stats["exact_duplicates"] = int((exact_first != np.arange(n)).sum())

    group_u, group_v = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    if near and signatures is not None and n:
        representatives = np.flatnonzero(exact_first == np.arange(n))
        keys = band_keys(np.asarray(signatures[representatives]), bands, rows)
        pairs = candidate_pairs(keys, representatives)
        similarity = _pair_similarity(pairs, signatures, exact_pairs, (threshold, group_threshold))
        stats["candidate_pairs"] = int(pairs.shape[0])
        remove = similarity >= threshold
        group = similarity >= group_threshold
        stats["near_pairs_at_threshold"] = int(remove.sum())
        stats["near_pairs_at_group_threshold"] = int(group.sum())
        edge_u.append(pairs[remove, 0])
        edge_v.append(pairs[remove, 1])
        group_u.append(pairs[group, 0])
        group_v.append(pairs[group, 1])

    u, v = np.concatenate(edge_u), np.concatenate(edge_v)
    cluster = connected_components(n, u, v)
    cluster_size = np.bincount(cluster, minlength=n)[cluster]
    if group_keys is not None and n:
        keys = group_keys.reshape(-1)  # every key of every document, pooled: a text is a text on either side
        owner = np.repeat(np.arange(n, dtype=np.int64), group_keys.shape[1])
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        group_u.append(owner)
        group_v.append(owner[first[inverse.reshape(-1)]])  # each document to the first holder of its key
        stats["documents_sharing_a_side"] = int(np.unique(owner[owner[first[inverse.reshape(-1)]] != owner]).size)
    group = connected_components(n, np.concatenate([u] + group_u[1:]), np.concatenate([v] + group_v[1:]))

    status = np.full(n, KEEP, dtype=np.int8)
    is_dup = cluster != np.arange(n)
    status[is_dup & (exact_first != np.arange(n))] = EXACT_DUPLICATE
    status[is_dup & (exact_first == np.arange(n))] = NEAR_DUPLICATE
    stats["near_duplicates"] = int((status == NEAR_DUPLICATE).sum())

    conflict_clusters = 0
    if labels is not None and n:
        stats["exact_conflict_texts"] = _conflicting_groups(exact_first, labels).size
        conflicting = _conflicting_groups(cluster, labels)
        conflicted = np.isin(cluster, conflicting)
        status[conflicted] = LABEL_CONFLICT
        conflict_clusters = int(conflicting.size)
    stats["conflict_clusters"] = conflict_clusters
    stats["conflict_documents"] = int((status == LABEL_CONFLICT).sum())
    stats["exact_duplicates_removed"] = int((status == EXACT_DUPLICATE).sum())
    stats["near_duplicates_removed"] = int((status == NEAR_DUPLICATE).sum())
    sizes = np.bincount(cluster, minlength=n)
    stats["clusters_with_duplicates"] = int((sizes >= 2).sum())
    group_sizes = np.bincount(group[status == KEEP], minlength=n)
    stats["split_groups_with_several_documents"] = int((group_sizes >= 2).sum())
    stats["documents_in_split_groups"] = int(group_sizes[group_sizes >= 2].sum())
    return DedupResult(status=status, cluster=cluster, cluster_size=cluster_size, group=group, stats=stats)


def _conflicting_groups(group: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Ids of groups whose members carry more than one label."""
    lowest = np.full(group.shape[0], np.iinfo(np.int64).max, dtype=np.int64)
    highest = np.full(group.shape[0], -1, dtype=np.int64)
    np.minimum.at(lowest, group, labels)
    np.maximum.at(highest, group, labels)
    ids = np.unique(group)
    return ids[lowest[ids] != highest[ids]]


def _pair_similarity(
    pairs: np.ndarray,
    signatures: np.ndarray,
    exact_pairs: Optional[Callable[[np.ndarray], np.ndarray]],
    thresholds: tuple[float, ...],
) -> np.ndarray:
    """Jaccard of each candidate pair: the signature estimate, replaced by the exact value (when
    ``exact_pairs`` is given) wherever the estimate is within 4 standard deviations of a threshold.
    Further away, the estimate decides with error probability below 1e-4 and no text is re-read."""
    similarity = np.zeros(pairs.shape[0], dtype=np.float64)
    for lo in range(0, pairs.shape[0], _PAIR_BATCH):
        batch = pairs[lo : lo + _PAIR_BATCH]
        similarity[lo : lo + len(batch)] = estimated_jaccard(
            np.asarray(signatures[batch[:, 0]]), np.asarray(signatures[batch[:, 1]])
        )
    if exact_pairs is None or pairs.shape[0] == 0:
        return similarity
    margin = 2.0 / np.sqrt(signatures.shape[1])  # 4 sigma of the estimate at J = 0.5, the worst case
    near = np.zeros(pairs.shape[0], dtype=bool)
    for threshold in thresholds:
        near |= np.abs(similarity - threshold) < margin
    to_check = np.flatnonzero(near)
    if to_check.size:
        similarity[to_check] = exact_pairs(pairs[to_check])
    return similarity
