"""MinHash + LSH: agreement with an independent shingler, recall and precision against known truth."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.data.dedup import EXACT_DUPLICATE, KEEP, LABEL_CONFLICT, NEAR_DUPLICATE, connected_components, find_duplicates
from lmforge.data.minhash import MinHasher, band_keys, estimated_jaccard, exact_jaccard, exact_jaccard_pairs
from lmforge.data.process_chunk import exact_key
from tests.data.neardup_corpus import jaccard, make_corpus, shingle_set


@pytest.fixture(scope="module")
def corpus():
    return make_corpus()


def test_numpy_shingles_match_a_plain_python_shingler(corpus):
    hasher = MinHasher()
    hashes, counts = hasher.shingles(corpus.texts[:50])
    bounds = np.concatenate(([0], np.cumsum(counts)))
    for i in range(50):
        assert np.unique(hashes[bounds[i] : bounds[i + 1]]).size == len(shingle_set(corpus.texts[i]))
    for a, b, truth in corpus.pairs[:30]:
        ha, hb = hasher.shingles([corpus.texts[a]])[0], hasher.shingles([corpus.texts[b]])[0]
        assert exact_jaccard(ha, hb) == pytest.approx(truth)


def test_cjk_text_uses_character_shingles():
    hasher = MinHasher(char_ngram=3)
    _, counts = hasher.shingles(["今天天气很好，我们去公园散步吧", "短", "", "one two"])
    assert counts.tolist() == [12, 1, 0, 1]  # 14 CJK characters -> 12 trigrams; short texts are one shingle


def test_signatures_do_not_depend_on_batching(corpus):
    hasher = MinHasher()
    together = hasher.signatures(corpus.texts[:40])
    alone = np.stack([hasher.signatures([t])[0] for t in corpus.texts[:40]])
    assert np.array_equal(together, alone)


def test_signature_estimate_is_unbiased(corpus):
    sig = MinHasher(num_perm=256).signatures(corpus.texts)
    errors = [estimated_jaccard(sig[a], sig[b]) - truth for a, b, truth in corpus.pairs]
    assert abs(np.mean(errors)) < 0.01 and np.std(errors) < 0.05


def _detected_pairs(result, pairs):
    return [(a, b, truth) for a, b, truth in pairs if result.cluster[a] == result.cluster[b]]


@pytest.mark.parametrize("verify", ["signature", "exact"])
def test_near_duplicate_recall_and_precision(corpus, verify):
    hasher = MinHasher()
    sig = hasher.signatures(corpus.texts)
    hashes = np.array([exact_key(t) for t in corpus.texts], dtype=np.uint64)

    def exact_pairs(pairs):
        sets = {int(i): np.unique(hasher.shingles([corpus.texts[int(i)]])[0]) for i in np.unique(pairs)}
        return exact_jaccard_pairs(pairs, sets)

    result = find_duplicates(
        hashes, sig, None, threshold=0.8, group_threshold=0.5, bands=42, rows=3,
        exact_pairs=exact_pairs if verify == "exact" else None,
    )
    truth_dup = [p for p in corpus.pairs if p[2] >= 0.8]
    found = _detected_pairs(result, corpus.pairs)
    recall = sum(1 for p in found if p[2] >= 0.8) / len(truth_dup)
    precision = sum(1 for p in found if p[2] >= 0.8) / len(found)
    assert len(truth_dup) > 50
    if verify == "exact":  # candidates checked on real shingles: the threshold is exact
        assert recall >= 0.95 and precision == 1.0
    else:  # the estimate's noise (std ~0.035 at J=0.8 with 128 slots) blurs the threshold itself
        clear = [p for p in corpus.pairs if p[2] >= 0.85]
        assert sum(1 for a, b, _ in clear if result.cluster[a] == result.cluster[b]) / len(clear) >= 0.95
        assert recall >= 0.8 and precision >= 0.8
        assert all(truth >= 0.7 for _, _, truth in found)  # nothing clearly below the threshold is removed
    # Every pair at or above the grouping level (with a margin for estimation noise) shares a split group.
    grouped = [p for p in corpus.pairs if p[2] >= (0.55 if verify == "exact" else 0.65)]
    assert all(result.group[a] == result.group[b] for a, b, _ in grouped)
    assert {int(s) for s in np.unique(result.status)} <= {KEEP, NEAR_DUPLICATE}


def test_unrelated_documents_are_not_joined(corpus):
    n_base = 300
    sig = MinHasher().signatures(corpus.texts[:n_base])
    hashes = np.array([exact_key(t) for t in corpus.texts[:n_base]], dtype=np.uint64)
    result = find_duplicates(hashes, sig, None, threshold=0.8, group_threshold=0.5, bands=42, rows=3)
    assert (result.status == KEEP).all() and np.array_equal(result.group, np.arange(n_base))


def test_exact_duplicates_and_label_conflicts():
    texts = ["Same text.", "same   TEXT.", "other words entirely here", "Same text."]
    labels = np.array([0, 0, 1, 1])
    hashes = np.array([exact_key(t) for t in texts], dtype=np.uint64)
    result = find_duplicates(hashes, MinHasher().signatures(texts), labels, threshold=0.8, group_threshold=0.5, bands=42, rows=3)
    assert result.status.tolist() == [LABEL_CONFLICT, LABEL_CONFLICT, KEEP, LABEL_CONFLICT]
    assert result.stats["exact_conflict_texts"] == 1 and result.cluster_size.tolist() == [3, 3, 1, 3]
    result = find_duplicates(hashes, None, np.array([0, 0, 1, 0]), threshold=0.8, group_threshold=0.5, bands=42, rows=3, near=False)
    assert result.status.tolist() == [KEEP, EXACT_DUPLICATE, KEEP, EXACT_DUPLICATE]


def test_connected_components_label_by_smallest_member():
    labels = connected_components(7, np.array([5, 3, 1, 6]), np.array([3, 1, 0, 6]))
    assert labels.tolist() == [0, 0, 2, 0, 4, 0, 6]


def test_band_keys_match_iff_rows_match():
    sig = np.array([[1, 2, 3, 4], [1, 2, 9, 4], [7, 2, 3, 4]], dtype=np.uint32)
    keys = band_keys(sig, bands=2, rows=2)
    assert keys[0, 0] == keys[1, 0] and keys[0, 1] != keys[1, 1] and keys[0, 0] != keys[2, 0] and keys[0, 1] == keys[2, 1]
    assert jaccard("a b c d e f", "a b c d e f") == 1.0
