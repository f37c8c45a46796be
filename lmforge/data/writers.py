"""Writers for record files: JSON lines, or Parquet in row groups (needs pyarrow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

_PARQUET_ROWS = 10_000  # rows buffered per Parquet row group


class RecordWriter:
    """Appends dict records to ``path`` as JSON lines or Parquet; use as a context manager."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self.format = fmt
        self.count = 0
        self._buffer: list[dict[str, Any]] = []
        self._parquet: Optional[Any] = None
        self._handle = open(path, "wb") if fmt == "jsonl" else None

    def write(self, row: dict[str, Any]) -> None:
        self.count += 1
        if self._handle is not None:
            self._handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            return
        self._buffer.append(row)
        if len(self._buffer) >= _PARQUET_ROWS:
            self._flush()

    def write_lines(self, lines: list[bytes]) -> None:
        """Append already-serialised JSON lines (jsonl only)."""
        assert self._handle is not None, "write_lines needs the jsonl format"
        self.count += len(lines)
        self._handle.write(b"".join(lines))

    def write_json_row(self, row: bytes, meta: dict[str, Any]) -> None:
        """Write a serialised JSON object row (ending in b"}\\n") with a "meta" key added."""
        if self._handle is None:
            self.write({**json.loads(row), "meta": meta})
            return
        self.count += 1
        self._handle.write(row[:-2] + b', "meta": ' + json.dumps(meta, ensure_ascii=False).encode("utf-8") + b"}\n")

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Nested and mixed-type fields travel as JSON strings so every row group has one schema.
        rows = [{k: (json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v) for k, v in r.items()} for r in self._buffer]
        table = pa.Table.from_pylist(rows)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.path, table.schema)
        self._parquet.write_table(table.cast(self._parquet.schema))
        self._buffer.clear()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            return
        if self._buffer:
            self._flush()
        if self._parquet is not None:
            self._parquet.close()
        elif self.count == 0:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({"text": pa.array([], pa.string())}), self.path)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
