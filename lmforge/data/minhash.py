"""MinHash signatures for a whole batch of texts at once, in numpy, with no per-shingle Python.

Shingles are n-grams of units: one CJK character, or one run of letters/digits in other scripts
(punctuation and spacing are ignored, case is folded). CJK-dominant texts use ``char_ngram``
units per shingle, others ``word_ngram``. A text with fewer units than n is one shingle.

How the batch is hashed (B = a fixed odd 64-bit base; all arithmetic wraps mod 2**64):
    cp[k]   code points of the concatenated batch                       (L,)
    Q[k]    = sum_{j<k} cp[j] * B^-j        (prefix sums; B is odd, so B^-1 exists mod 2**64)
    H(i,j)  = (Q[j] - Q[i]) * B^i           polynomial hash of cp[i:j], the same at any offset
Each shingle hash is mixed (splitmix64), then hashed by num_perm multiply-shift functions
h_p(x) = (a_p * x + b_p) >> 32; a signature is the per-text minimum of each h_p.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so invertible mod 2**64
_ROWS_PER_BLOCK = 8192  # shingles hashed at once: 8192 x 128 perms x 4 bytes = 4 MB, cache-friendly
_SEPARATOR = "\x00"
EMPTY_SIGNATURE_VALUE = np.uint32(0xFFFFFFFF)


def _inverse_mod_2_64(value: int) -> int:
    return pow(value, -1, 1 << 64)


@lru_cache(maxsize=1)
def _char_classes() -> np.ndarray:
    """Class per BMP code point: 0 separator, 1 letter/digit, 2 CJK character."""
    table = np.frombuffer(bytes(1 if chr(c).isalnum() else 0 for c in range(0x10000)), dtype=np.uint8).copy()
    for lo, hi in ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF)):
        table[lo : hi + 1] = 2
    return table


def _classify(cp: np.ndarray) -> np.ndarray:
    classes = _char_classes()[np.minimum(cp, 0xFFFF)]
    if cp.size and cp.max() >= 0x10000:
        astral = cp >= 0x10000
        classes[astral] = 1  # letters, emoji... count as letters
        classes[astral & (cp >= 0x20000) & (cp < 0x323B0)] = 2  # CJK extensions B..H
    return classes


def _powers(base: int, length: int) -> np.ndarray:
    """[B**0, B**1, ..., B**(length-1)] mod 2**64, by doubling: log2(length) vectorised steps
    (numpy's cumprod is a slow sequential loop for this)."""
    powers = np.empty(max(length, 1), dtype=np.uint64)
    powers[0] = 1
    filled = 1
    with np.errstate(over="ignore"):
        while filled < length:
            step = min(filled, length - filled)
            powers[filled : filled + step] = powers[:step] * np.uint64(pow(base, filled, 1 << 64))
            filled += step
    return powers[:length]


def splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class MinHasher:
    """Computes shingle hashes and MinHash signatures for batches of texts."""

    def __init__(self, num_perm: int = 128, word_ngram: int = 5, char_ngram: int = 5, seed: int = 1) -> None:
        self.num_perm = num_perm
        self.word_ngram = word_ngram
        self.char_ngram = char_ngram
        rng = np.random.default_rng(seed)
        # Permutation p maps a mixed 32-bit shingle hash x to a_p * x + b_p (mod 2**32): a bijection
        # (a_p odd), computed in 32-bit lanes, twice as fast as 64-bit multiply-shift. Its low bits are
        # weak, but x is already uniformly mixed and only the minimum matters; tests check the estimator.
        self._a = (rng.integers(0, 2**31, num_perm, dtype=np.uint32) << np.uint32(1)) | np.uint32(1)
        self._b = rng.integers(0, 2**32, num_perm, dtype=np.uint64).astype(np.uint32)
        self._powers = np.ones(1, dtype=np.uint64)  # B**k, grown on demand
        self._inverse_powers = np.ones(1, dtype=np.uint64)  # B**-k

    def _power_tables(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        if self._powers.shape[0] < length:
            size = max(length, 2 * self._powers.shape[0], 1 << 20)  # grow rarely: cumprod is sequential
            self._powers = _powers(int(_BASE), size)
            self._inverse_powers = _powers(_inverse_mod_2_64(int(_BASE)), size)
        return self._powers[:length], self._inverse_powers[:length]

    def shingles(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Mixed 64-bit shingle hashes of all texts (S,) and each text's count (N,)."""
        n_texts = len(texts)
        if n_texts == 0:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        texts = [t.replace(_SEPARATOR, " ").lower() for t in texts]
        cp = np.frombuffer(_SEPARATOR.join(texts).encode("utf-32-le"), dtype=np.uint32)  # (L,)
        length = cp.shape[0]
        text_starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])  # (N,) offsets in the joined text
        classes = _classify(cp)
        is_word = classes == 1
        prev_word = np.concatenate(([False], is_word[:-1]))
        next_word = np.concatenate((is_word[1:], [False]))
        is_cjk = classes == 2
        starts = np.flatnonzero(is_cjk | (is_word & ~prev_word))  # unit start offsets (U,)
        ends = np.flatnonzero(is_cjk | (is_word & ~next_word)) + 1  # unit end offsets (U,)
        unit_text = np.searchsorted(text_starts, starts, side="right") - 1
        units_per_text = np.bincount(unit_text, minlength=n_texts)  # (N,)
        cjk_per_text = np.bincount(unit_text, weights=is_cjk[starts], minlength=n_texts)
        n = np.where(cjk_per_text >= 0.3 * np.maximum(units_per_text, 1), self.char_ngram, self.word_ngram)
        counts = np.where(units_per_text > 0, np.maximum(units_per_text - n + 1, 1), 0)  # shingles per text
        total = int(counts.sum())
        # Shingle s of text t spans units first[s] .. last[s].
        unit_offset = np.concatenate(([0], np.cumsum(units_per_text)[:-1]))
        shingle_offset = np.concatenate(([0], np.cumsum(counts)[:-1]))
        owner = np.repeat(np.arange(n_texts), counts)
        first = unit_offset[owner] + (np.arange(total) - shingle_offset[owner])
        last = np.minimum(first + n[owner] - 1, unit_offset[owner] + units_per_text[owner] - 1)
        begin, finish = starts[first], ends[last]
        powers, inverse_powers = self._power_tables(length)
        with np.errstate(over="ignore"):
            prefix = np.empty(length + 1, dtype=np.uint64)
            prefix[0] = 0
            np.cumsum(cp * inverse_powers, dtype=np.uint64, out=prefix[1:])
            hashes = (prefix[finish] - prefix[begin]) * powers[begin]
        return splitmix64(hashes), counts

    def signatures(self, texts: list[str]) -> np.ndarray:
        """(N, num_perm) uint32 signatures; a text with no units gets all 0xFFFFFFFF."""
        hashes, counts = self.shingles(texts)
        return self.signatures_from_shingles(hashes, counts)

    def signatures_from_shingles(self, hashes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        signatures = np.full((counts.shape[0], self.num_perm), EMPTY_SIGNATURE_VALUE, dtype=np.uint32)
        owner = np.repeat(np.arange(counts.shape[0]), counts)
        folded = (hashes ^ (hashes >> np.uint64(32))).astype(np.uint32)  # (S,) 32-bit shingle hashes
        for lo in range(0, folded.shape[0], _ROWS_PER_BLOCK):
            block = folded[lo : lo + _ROWS_PER_BLOCK]
            block_owner = owner[lo : lo + _ROWS_PER_BLOCK]
            # (P, R) layout: each text's shingles are contiguous in a row, so the per-text minimum
            # is a vectorised reduction over contiguous memory (about 5x faster than (R, P)).
            values = self._a[:, None] * block[None, :]  # (P, R), wraps mod 2**32
            values += self._b[:, None]
            cuts = np.flatnonzero(np.diff(block_owner)) + 1
            segment_starts = np.concatenate(([0], cuts))
            docs = block_owner[segment_starts]
            partial = np.minimum.reduceat(values, segment_starts, axis=1)  # (P, docs in block)
            signatures[docs] = np.minimum(signatures[docs], partial.T)
        return signatures


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(N, bands) uint64 keys; two texts share a key in band b iff their rows agree (up to 2**-64)."""
    n = signatures.shape[0]
    keys = np.zeros((n, bands), dtype=np.uint64)
    multipliers = splitmix64(np.arange(1, rows + 1, dtype=np.uint64)) | np.uint64(1)
    with np.errstate(over="ignore"):
        for band in range(bands):
            block = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)  # (N, rows)
            keys[:, band] = splitmix64((block * multipliers[None, :]).sum(axis=1, dtype=np.uint64) + np.uint64(band))
    return keys


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Share of equal signature slots, row by row: an unbiased estimate of Jaccard similarity."""
    return (sig_a == sig_b).mean(axis=-1)


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two shingle-hash sets."""
    return float(exact_jaccard_pairs(np.array([[0, 1]]), [np.unique(a), np.unique(b)])[0])


def exact_jaccard_pairs(pairs: np.ndarray, sets: "list[np.ndarray] | dict[int, np.ndarray]") -> np.ndarray:
    """Jaccard of many pairs at once. ``sets[i]`` holds document i's unique shingle hashes.

    All pairs' members are laid out as one array tagged by pair, sorted by (pair, hash); a hash
    equal to its neighbour within the same pair is in the intersection.
    """
    if len(pairs) == 0:
        return np.zeros(0)
    parts = [sets[int(i)] for pair in pairs for i in pair]
    sizes = np.array([p.shape[0] for p in parts], dtype=np.int64).reshape(-1, 2)  # (P, 2)
    values = np.concatenate(parts)
    tags = np.repeat(np.arange(len(pairs)), sizes.sum(axis=1))
    order = np.lexsort((values, tags))
    values, tags = values[order], tags[order]
    same = (values[1:] == values[:-1]) & (tags[1:] == tags[:-1])
    intersection = np.bincount(tags[1:][same], minlength=len(pairs))
    union = sizes.sum(axis=1) - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)
