"""Tagged rows of a prepared split, the one reader of their format: word segmentation rows
(``chars`` + BMES ``tags``) and NER rows (People's Daily ``words`` + ``pos``, turned into character
BIO tags)."""

from __future__ import annotations

from typing import Any, Literal, Sequence

from lmforge.config import ConfigError
from lmforge.data.prepared import iter_numbered, split_file

__all__ = ["PEOPLES_DAILY_ENTITIES", "TagTask", "bmes_tags", "detect_tag_task", "pos_to_bio", "read_tagged"]

TagTask = Literal["segmentation", "ner"]

PEOPLES_DAILY_ENTITIES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}  # person, place, organisation names


def pos_to_bio(
    words: Sequence[str],
    pos: Sequence[str],
    entities: dict[str, str] = PEOPLES_DAILY_ENTITIES,
    merge: Sequence[str] = ("PER",),
) -> list[str]:
    """Character BIO tags for NER from People's Daily words and part-of-speech tags.

    Each character gets one tag ('B-PER', 'I-PER', 'O'...). Consecutive words of a type in
    ``merge`` form one entity: the corpus tags a surname and a given name as two nr words
    ('江/nr 泽民/nr'), while two adjacent ns places are two places.
    """
    if len(words) != len(pos):
        raise ValueError(f"{len(words)} words but {len(pos)} part-of-speech tags")
    tags: list[str] = []
    prev_kind = None
    for word, tag in zip(words, pos):
        if not word:
            continue
        kind = entities.get(tag)
        if kind is None:
            tags.extend("O" * len(word))
        else:
            first = "I" if kind == prev_kind and kind in merge else "B"
            tags.extend([f"{first}-{kind}"] + [f"I-{kind}"] * (len(word) - 1))
        prev_kind = kind
    return tags


def detect_tag_task(row: dict[str, Any]) -> TagTask | None:
    """segmentation for rows with chars + BMES tags, ner for rows with words + pos tags, else None."""
    if "chars" in row and "tags" in row:
        return "segmentation"
    if "words" in row and "pos" in row:
        return "ner"
    return None


def bmes_tags(words: Sequence[str]) -> list[str]:
    """One BMES tag per character of the words: 'S' for one-character words, 'B M... E' otherwise."""
    tags: list[str] = []
    for word in words:
        if len(word) == 1:
            tags.append("S")
        elif word:
            tags += ["B"] + ["M"] * (len(word) - 2) + ["E"]
    return tags


def read_tagged(directory: str, split: str, task: TagTask) -> tuple[list[str], list[list[str]]]:
    """(texts, gold tag sequences) of a split; texts are rebuilt from the tagged units so tags align."""
    path = split_file(directory, split)
    texts, gold = [], []
    for number, row in iter_numbered(path):
        if detect_tag_task(row) != task:
            raise ConfigError(f"{path}:{number}: not a {task} row (fields chars+tags or words+pos)")
        if task == "segmentation":
            texts.append("".join(row["chars"]))
            gold.append(list(row["tags"]))
        else:
            texts.append("".join(row["words"]))
            gold.append(pos_to_bio(row["words"], row["pos"]))
        if len(texts[-1]) != len(gold[-1]):
            raise ConfigError(f"{path}:{number}: {len(gold[-1])} tags, {len(texts[-1])} characters")
    return texts, gold
