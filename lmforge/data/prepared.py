"""Reader of a `data prepare` output directory, for the stages that consume it.

The directory is finished only when its DONE marker exists (prepare removes it first and
writes it last), so a half-written directory is refused before any work starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from lmforge.config import ConfigError

SUPPORTED_FORMAT = 1


def check_prepared(directory: str | Path) -> Path:
    """The directory as a Path, after checking it is a finished `data prepare` output of a known version."""
    path = Path(directory)
    done = path / "DONE"
    if not path.is_dir():
        raise ConfigError(f"prepared data directory not found: {path}")
    if not done.is_file():
        raise ConfigError(f"{path} is not a finished `lmforge data prepare` output (no DONE marker)")
    try:
        version = json.loads(done.read_text(encoding="utf-8") or "{}").get("format_version")
    except (json.JSONDecodeError, AttributeError):
        raise ConfigError(f"{done}: not valid JSON") from None
    if version != SUPPORTED_FORMAT:
        raise ConfigError(f"{done}: format_version {version!r}, this lmforge reads {SUPPORTED_FORMAT}")
    return path


def split_file(directory: str | Path, split: str) -> Path:
    path = check_prepared(directory)
    for suffix in (".jsonl", ".parquet"):
        candidate = path / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{path}: no {split}.jsonl or {split}.parquet")


def iter_split(directory: str | Path, split: str) -> Iterator[dict[str, Any]]:
    """Rows of one split (train, validation or test) as dicts: text, label if any, other fields, meta."""
    path = split_file(directory, split)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
        return
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg})") from None


def read_labelled(directory: str | Path, split: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of a split; every row must carry a label (errors name file and line)."""
    texts: list[str] = []
    labels: list[str] = []
    for number, row in enumerate(iter_split(directory, split), start=1):
        if row.get("label") is None:
            raise ConfigError(
                f"{split_file(directory, split)}:{number}: no label (prepare with --label-field)"
            )
        texts.append(row["text"])
        labels.append(str(row["label"]))
    return texts, labels
