"""The one reader of a `data prepare` output directory, for every stage that consumes it (also of a
single .jsonl/.parquet/plain-text file, which the tokenizer stage accepts in place of a directory).

The directory is finished only when its DONE marker exists (prepare removes it first and
writes it last), so a half-written directory is refused before any work starts; the marker's
format_version must be one this reader knows.

Records are streamed: JSON lines one at a time (blank lines skipped, errors naming file:line),
Parquet in record batches. Parquet holds nested and mixed-type fields as JSON strings (see
data/writers.py); they are decoded back here, so a row reads the same from either format.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.config import ConfigError

__all__ = [
    "SPLIT_SUFFIXES",
    "SUPPORTED_FORMAT",
    "check_prepared",
    "find_split",
    "iter_numbered",
    "iter_records",
    "iter_split",
    "iter_texts",
    "read_labelled",
    "split_file",
]

SUPPORTED_FORMAT = 1
SPLIT_SUFFIXES = (".jsonl", ".parquet")


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


def pair_field(directory: str | Path) -> str | None:
    """The field of the second text when the directory holds text pairs (its DONE marker's "fields"
    names "pair"; directories written before pairs existed hold single texts)."""
    done = check_prepared(directory) / "DONE"
    fields = json.loads(done.read_text(encoding="utf-8") or "{}").get("fields") or {}
    return fields.get("pair")


def find_split(directory: str | Path, split: str) -> Path | None:
    """The file of one split (train, validation or test) of a checked prepared directory, or None
    when the directory has no such split."""
    path = check_prepared(directory)
    for suffix in SPLIT_SUFFIXES:
        candidate = path / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def split_file(directory: str | Path, split: str) -> Path:
    """As find_split, for a split that must be there (a ConfigError naming the directory if not)."""
    found = find_split(directory, split)
    if found is None:
        raise ConfigError(f"{Path(directory)}: no {split}.jsonl or {split}.parquet")
    return found


def iter_numbered(path: str | Path, text_field: str = "text") -> Iterator[tuple[int, dict[str, Any]]]:
    """(number, record) of a .jsonl or .parquet file (the number is the line, or the row of a
    Parquet file, counting from 1), or ({text_field: line}) for each non-empty line of any other
    file. Every record has a string ``text_field``."""
    path = Path(path)
    if path.suffix == ".parquet":
        yield from _parquet_records(path, text_field)
        return
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if path.suffix != ".jsonl":
                yield number, {text_field: line.rstrip("\r\n")}
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            yield number, _checked(record, path, number, text_field)


def iter_records(path: str | Path, text_field: str = "text") -> Iterator[dict[str, Any]]:
    """The records of iter_numbered, without their numbers."""
    for _, record in iter_numbered(path, text_field):
        yield record


def iter_texts(path: str | Path, text_field: str = "text") -> Iterator[str]:
    for record in iter_records(path, text_field):
        yield record[text_field]


def iter_split(directory: str | Path, split: str) -> Iterator[dict[str, Any]]:
    """Rows of one split (train, validation or test) as dicts: text, label if any, other fields, meta."""
    return iter_records(split_file(directory, split))


def read_labelled(directory: str | Path, split: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of a split; every row must carry a label (errors name file and line)."""
    path = split_file(directory, split)
    texts: list[str] = []
    labels: list[str] = []
    for number, row in iter_numbered(path):
        if row.get("label") is None:
            raise ConfigError(f"{path}:{number}: no label (prepare with --label-field)")
        texts.append(row["text"])
        labels.append(str(row["label"]))
    return texts, labels


def _checked(record: Any, path: Path, number: int, text_field: str) -> dict[str, Any]:
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        raise ConfigError(f"{path}:{number}: no string field '{text_field}' (set text_field=...)")
    return record


def _parquet_records(path: Path, text_field: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{path}: reading Parquet needs pyarrow: pip install 'lmforge[parquet]'") from None
    number = 0
    for batch in pq.ParquetFile(path).iter_batches():
        for row in batch.to_pylist():
            number += 1
            # data prepare stores nested fields as JSON strings in Parquet (one schema per file)
            record = {k: (v if k == text_field else _maybe_json(v)) for k, v in row.items()}
            yield number, _checked(record, path, number, text_field)


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
