"""EDA-style text augmentation (Wei & Zou 2019): synonym replacement, random insertion, swap and deletion.

Script-aware: Chinese and Japanese text is cut into words with jieba (a private tokenizer that
also knows the synonym file's words), other text is split on whitespace. Only content tokens
(those holding a letter or digit) are edited; punctuation stays where it was, so "，" never
moves to the start of a sentence. Deterministic: example i always gets the same edits for a
given seed, whatever the order or number of workers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from lmforge.config import ConfigError
from lmforge.data.text import is_cjk
from lmforge.finetune.config import AugmentConfig

__all__ = ["OPERATIONS", "Augmenter", "augment_examples", "load_synonyms"]

OPERATIONS = ("synonym_replacement", "random_insertion", "random_swap", "random_deletion")

Synonyms = dict[str, tuple[str, ...]]


def load_synonyms(path: str | Path) -> Synonyms:
    """word -> its synonyms, from a file of one synonym group per line (whitespace or tab separated).

    Blank lines and lines starting with '#' are skipped. A word in several groups gets the union.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"synonym file not found: {path}")
    table: dict[str, dict[str, None]] = {}  # dicts keep insertion order, so results are deterministic
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                words = line.split()
                if not words or words[0].startswith("#"):
                    continue
                if len(words) < 2:
                    raise ConfigError(
                        f"{path}:{number}: a synonym group needs at least two words, got {words[0]!r}"
                    )
                if len(set(words)) != len(words):
                    repeated = next(w for w in words if words.count(w) > 1)
                    raise ConfigError(f"{path}:{number}: {repeated!r} appears twice in one group")
                for word in words:
                    table.setdefault(word, {}).update((w, None) for w in words if w != word)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return {word: tuple(others) for word, others in table.items()}


def _is_content(token: str) -> bool:
    return any(ch.isalnum() for ch in token)


class Augmenter:
    """Applies EDA operations to one text; ``augment(text, index)`` is deterministic in (seed, index)."""

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        self.synonyms: Synonyms = load_synonyms(config.synonyms) if config.synonyms else {}
        if "synonym_replacement" in config.operations and not self.synonyms:
            raise ConfigError(
                "augment.operations has synonym_replacement but no augment.synonyms file is given"
            )
        self._jieba: Any = None

    # ------------------------------------------------------------ tokens
    def words(self, text: str) -> tuple[list[str], str]:
        """(tokens, joiner): jieba words joined by '' for CJK text, else whitespace words joined by ' '."""
        if not is_cjk(text):
            return text.split(), " "
        if self._jieba is None:
            import jieba

            jieba.setLogLevel(logging.WARNING)  # its "Building prefix dict" notice is noise here
            self._jieba = jieba.Tokenizer()
            for word in self.synonyms:
                if is_cjk(word):
                    self._jieba.add_word(word)  # so a multi-character synonym is cut as one word
        return self._jieba.lcut(text), ""

    def _count(self, tokens: Sequence[str], ratio: float) -> int:
        """EDA's n = max(1, ratio * content words), 0 when the ratio is 0 or there are no words."""
        content = sum(map(_is_content, tokens))
        return max(1, int(ratio * content)) if ratio > 0 and content else 0

    # ------------------------------------------------------------ operations on token lists
    def synonym_replacement(self, tokens: list[str], rng: np.random.Generator) -> list[str]:
        """Replace n distinct words that have synonyms by a random synonym each."""
        out = list(tokens)
        candidates = [i for i, t in enumerate(out) if t in self.synonyms]
        n = min(self._count(out, self.config.synonym_ratio), len(candidates))
        for i in rng.permutation(candidates)[:n]:
            choices = self.synonyms[out[i]]
            out[i] = choices[rng.integers(len(choices))]
        return out

    def random_insertion(self, tokens: list[str], rng: np.random.Generator) -> list[str]:
        """Insert n words at random places: a synonym of a random word of the text (EDA) when one has
        synonyms, else a copy of a random word of the text."""
        out = list(tokens)
        for _ in range(self._count(tokens, self.config.insertion_ratio)):
            content = [t for t in out if _is_content(t)]
            with_synonyms = [t for t in content if t in self.synonyms]
            if with_synonyms:
                choices = self.synonyms[with_synonyms[rng.integers(len(with_synonyms))]]
                word = choices[rng.integers(len(choices))]
            else:
                word = content[rng.integers(len(content))]
            out.insert(int(rng.integers(len(out) + 1)), word)
        return out

    def random_swap(self, tokens: list[str], rng: np.random.Generator) -> list[str]:
        """Swap two random content words, n times."""
        out = list(tokens)
        positions = [i for i, t in enumerate(out) if _is_content(t)]
        if len(positions) < 2:
            return out
        for _ in range(self._count(out, self.config.swap_ratio)):
            a, b = rng.choice(positions, size=2, replace=False)
            out[a], out[b] = out[b], out[a]
        return out

    def random_deletion(self, tokens: list[str], rng: np.random.Generator) -> list[str]:
        """Delete each content word with probability p; one word survives if all would go."""
        content = [i for i, t in enumerate(tokens) if _is_content(t)]
        drop = {i for i in content if rng.random() < self.config.deletion_prob}
        if content and len(drop) == len(content):
            drop.discard(content[rng.integers(len(content))])
        return [t for i, t in enumerate(tokens) if i not in drop]

    # ------------------------------------------------------------ texts
    def apply(self, text: str, operation: str, rng: np.random.Generator) -> str:
        if operation not in OPERATIONS:
            raise ValueError(f"unknown augmentation {operation!r} (known: {', '.join(OPERATIONS)})")
        tokens, joiner = self.words(text)
        return joiner.join(getattr(self, operation)(tokens, rng))

    def augment(self, text: str, index: int) -> list[tuple[str, str]]:
        """``config.copies`` augmented versions of text number ``index``, as (operation, text) pairs.

        Operations take turns (EDA gives each an equal share), starting at a seeded offset.
        """
        rng = np.random.default_rng([self.config.seed, index])
        ops = self.config.operations
        start = int(rng.integers(len(ops)))
        return [
            (op, self.apply(text, op, rng))
            for op in (ops[(start + k) % len(ops)] for k in range(self.config.copies))
        ]


def augment_examples(
    examples: Iterable[dict[str, Any]],
    config: AugmentConfig,
    text_field: str = "text",
    augmenter: Optional[Augmenter] = None,
) -> Iterator[dict[str, Any]]:
    """Each example, then its augmented copies: same fields and label, new text, and
    ``augmentation`` naming the edit."""
    augmenter = augmenter or Augmenter(config)
    for index, example in enumerate(examples):
        yield example
        for operation, text in augmenter.augment(example[text_field], index):
            yield {**example, text_field: text, "augmentation": operation}
