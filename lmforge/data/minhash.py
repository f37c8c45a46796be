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
_ROWS_PER_BLOCK = 16384  # shingles hashed at once: 16384 x 128 perms x 8 bytes = 16 MB
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
    classes = np.ones(cp.shape, dtype=np.uint8)  # astral code points: letters, emoji... count as letters
    bmp = cp < 0x10000
    classes[bmp] = _char_classes()[cp[bmp]]
    classes[(cp >= 0x20000) & (cp < 0x323B0)] = 2  # CJK extensions B..H
    return classes


def _powers(base: int, length: int) -> np.ndarray:
    powers = np.full(length, base, dtype=np.uint64)
    powers[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(powers, dtype=np.uint64)


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
        self._a = (rng.integers(0, 2**63, num_perm, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)  # odd
        self._b = rng.integers(0, 2**63, num_perm, dtype=np.uint64)

    def shingles(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Mixed 64-bit shingle hashes of all texts (S,) and each text's count (N,)."""
        n_texts = len(texts)
        if n_texts == 0:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        joined = _SEPARATOR.join(t.replace(_SEPARATOR, " ") for t in texts).lower()
        cp = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)  # (L,)
        length = cp.shape[0]
        classes = _classify(cp)
        # Text index of every code point: separators between texts bump it by one.
        text_of = np.cumsum(cp == 0) if length else np.zeros(0, np.int64)  # (L,)
        is_word = classes == 1
        prev_word = np.concatenate(([False], is_word[:-1]))
        next_word = np.concatenate((is_word[1:], [False]))
        starts = np.flatnonzero((classes == 2) | (is_word & ~prev_word))  # unit start offsets (U,)
        ends = np.flatnonzero((classes == 2) | (is_word & ~next_word)) + 1  # unit end offsets (U,)
        unit_text = text_of[starts]
        units_per_text = np.bincount(unit_text, minlength=n_texts)  # (N,)
        cjk_per_text = np.bincount(unit_text, weights=(classes[starts] == 2), minlength=n_texts)
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
        with np.errstate(over="ignore"):
            inverse_powers = _powers(_inverse_mod_2_64(int(_BASE)), length)
            prefix = np.concatenate(([np.uint64(0)], np.cumsum(cp * inverse_powers, dtype=np.uint64)))
            hashes = (prefix[finish] - prefix[begin]) * _powers(int(_BASE), length)[begin]
        return splitmix64(hashes), counts

    def signatures(self, texts: list[str]) -> np.ndarray:
        """(N, num_perm) uint32 signatures; a text with no units gets all 0xFFFFFFFF."""
        hashes, counts = self.shingles(texts)
        return self.signatures_from_shingles(hashes, counts)

    def signatures_from_shingles(self, hashes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        signatures = np.full((counts.shape[0], self.num_perm), EMPTY_SIGNATURE_VALUE, dtype=np.uint32)
        owner = np.repeat(np.arange(counts.shape[0]), counts)
        shift = np.uint64(32)
        for lo in range(0, hashes.shape[0], _ROWS_PER_BLOCK):
            block = hashes[lo : lo + _ROWS_PER_BLOCK]
            block_owner = owner[lo : lo + _ROWS_PER_BLOCK]
            with np.errstate(over="ignore"):
                values = ((block[:, None] * self._a[None, :] + self._b[None, :]) >> shift).astype(np.uint32)  # (R, P)
            cuts = np.flatnonzero(np.diff(block_owner)) + 1
            segment_starts = np.concatenate(([0], cuts))
            docs = block_owner[segment_starts]
            partial = np.minimum.reduceat(values, segment_starts, axis=0)  # (docs in block, P)
            signatures[docs] = np.minimum(signatures[docs], partial)
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
    a, b = np.unique(a), np.unique(b)
    union = np.union1d(a, b).shape[0]
    return np.intersect1d(a, b, assume_unique=True).shape[0] / union if union else 1.0
