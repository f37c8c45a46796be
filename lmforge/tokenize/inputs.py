"""Reading the text records that `lmforge data prepare` writes (or one plain file), for tokenizer stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional

from lmforge.config import ConfigError

SPLIT_SUFFIXES = (".jsonl", ".parquet")


def check_prepared(data_dir: Path) -> Path:
    """Refuse a directory that is not a finished `lmforge data prepare` output (DONE is written last)."""
    if not data_dir.is_dir():
        raise ConfigError(f"prepared data directory not found: {data_dir}")
    if not (data_dir / "DONE").is_file():
        raise ConfigError(f"{data_dir} is not a finished `lmforge data prepare` output (no DONE marker)")
    return data_dir


def split_file(data_dir: Path, split: str) -> Optional[Path]:
    """The file of one split in a prepared directory, or None when that split is absent."""
    for suffix in SPLIT_SUFFIXES:
        path = data_dir / f"{split}{suffix}"
        if path.is_file():
            return path
    return None


def iter_records(path: Path, text_field: str = "text") -> Iterator[dict[str, Any]]:
    """Dict records of a .jsonl/.parquet file, or {"text": line} for each non-empty line of a text file."""
    if path.suffix == ".parquet":
        yield from _parquet_records(path, text_field)
        return
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if path.suffix != ".jsonl":
                if line.strip():
                    yield {text_field: line.rstrip("\r\n")}
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not valid JSON: {exc.msg}") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise ConfigError(f"{path}:{number}: no string field '{text_field}' (set text_field=...)")
            yield record


def iter_texts(path: Path, text_field: str = "text") -> Iterator[str]:
    for record in iter_records(path, text_field):
        yield record[text_field]


def _parquet_records(path: Path, text_field: str) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{path}: reading Parquet needs pyarrow: pip install 'lmforge[parquet]'") from None
    for batch in pq.ParquetFile(path).iter_batches():
        for row in batch.to_pylist():
            # data prepare stores nested fields as JSON strings in Parquet (one schema per file)
            yield {k: (v if k == text_field else _maybe_json(v)) for k, v in row.items()}


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
