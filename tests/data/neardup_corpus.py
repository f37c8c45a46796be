"""A generated corpus with near-duplicates of known Jaccard similarity, and an independent
pure-Python shingler to measure that similarity (it shares no code with lmforge's numpy one)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_WORD = re.compile(r"[^\W_]+")


def shingle_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


@dataclass
class NearDupCorpus:
    texts: list[str]
    pairs: list[tuple[int, int, float]]  # (original, variant, true Jaccard)


def make_corpus(n_base: int = 300, n_variants: int = 300, words: int = 120, seed: int = 0) -> NearDupCorpus:
    """Base documents of random words; variants edit a random share of one base's words so that
    true Jaccard (word 5-grams) spreads over about 0.4 to 1.0."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8))) for _ in range(5000)]
    texts = [" ".join(rng.choice(vocabulary) for _ in range(words)) + "." for _ in range(n_base)]
    pairs = []
    for _ in range(n_variants):
        base = rng.randrange(n_base)
        tokens = texts[base].rstrip(".").split()
        edits = rng.randint(1, 12)  # each substituted word breaks up to 5 shingles
        for position in rng.sample(range(len(tokens)), edits):
            tokens[position] = rng.choice(vocabulary)
        variant = " ".join(tokens) + "."
        texts.append(variant)
        pairs.append((base, len(texts) - 1, jaccard(texts[base], variant)))
    return NearDupCorpus(texts, pairs)
