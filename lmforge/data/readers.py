"""Readers: files, folders, globs and built-in corpora to one stream of RawRecords.

Every physical unit of input (a line, a block, a row, an empty file) becomes exactly one record;
units that cannot be read carry an ``error`` reason instead of text, so nothing disappears.
Memory stays bounded: files are read line by line, and an absurdly long line is skipped in
chunks without ever being held whole.
"""

from __future__ import annotations

import bisect
import csv
import glob
import gzip
import io
import json
import os
import re
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional

from lmforge.config import ConfigError
from lmforge.corpora import get_corpus
from lmforge.data.config import InputConfig
from lmforge.data.records import RawRecord
from lmforge.text import lone_surrogate

TEXT_EXTENSIONS = (".txt", ".text", ".md")
JSON_EXTENSIONS = (".jsonl", ".json", ".ndjson")
CSV_EXTENSIONS = (".csv", ".tsv")
PARQUET_EXTENSIONS = (".parquet",)
COMPRESSIONS = (".gz", ".zst")
CORPUS_PREFIX = "corpus:"


_TOO_DEEP = "nested deeper than the JSON parser's recursion limit"


def expand_inputs(paths: list[str]) -> list[str]:
    """Files, folders (recursively) and globs to a sorted list of readable inputs; fails before any work."""
    if not paths:
        raise ConfigError("no input: give --input PATH (a file, folder, glob or corpus:NAME)")
    files: list[str] = []
    for spec in paths:
        if spec.startswith(CORPUS_PREFIX):
            get_corpus(spec[len(CORPUS_PREFIX) :])  # raises a clear error for unknown names
            files.append(spec)
            continue
        if any(ch in spec for ch in "*?["):
            matches = sorted(m for m in glob.glob(spec, recursive=True) if os.path.isfile(m))
            if not matches:
                raise ConfigError(f"input glob matches no file: {spec}")
            files.extend(matches)
        elif os.path.isdir(spec):
            found = sorted(
                str(p) for p in Path(spec).rglob("*") if p.is_file() and _format_of(str(p)) is not None
            )
            if not found:
                raise ConfigError(f"input folder holds no readable file (.txt/.jsonl/.json/.csv/.tsv/.parquet): {spec}")
            files.extend(found)
        elif os.path.isfile(spec):
            files.append(spec)
        else:
            raise ConfigError(f"input path not found: {spec}")
    for path in files:
        if path.startswith(CORPUS_PREFIX):
            continue
        if _format_of(path) == "parquet" and path.lower().endswith(COMPRESSIONS):
            raise ConfigError(f"{path}: compressed Parquet is not read (Parquet compresses its columns itself); "
                              f"decompress the file first, e.g. gunzip or unzstd")
        if _format_of(path) is None:
            raise ConfigError(f"unsupported input format: {path} (use .txt, .jsonl, .json, .csv, .tsv or .parquet, optionally .gz/.zst)")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"input file is not readable: {path}")
    return files


def check_columns(files: list[str], config: InputConfig) -> None:
    """Columnar inputs name their fields up front: a missing text or label column is an error now."""
    for path in files:
        fmt = _format_of(path)
        if fmt == "parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise ConfigError(f"{path}: reading Parquet needs pyarrow: pip install 'lmforge[parquet]'") from None
            try:
                columns = set(pq.ParquetFile(path).schema_arrow.names)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a broken file
                raise ConfigError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
        elif fmt in ("csv", "tsv"):
            with open(path, "rb") as raw:
                first = _decompressed(path, raw).readline().decode("utf-8", errors="replace").lstrip("\ufeff")
            if not first.strip():
                continue  # an empty file is a counted rejection, not an error
            columns = set(next(csv.reader([first], delimiter="\t" if fmt == "tsv" else ",")))
        else:
            continue
        for key in filter(None, (config.text_field, config.label_field, config.pair_field)):
            if key.split(".")[0] not in columns:
                raise ConfigError(f"{path}: no column '{key}' (columns: {', '.join(sorted(columns))})")


_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32LE"), (b"\x00\x00\xfe\xff", "UTF-32BE"),
         (b"\xff\xfe", "UTF-16LE"), (b"\xfe\xff", "UTF-16BE"))
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def check_readable(files: list[str]) -> None:
    """Refuse file-level damage before any output is written, in one line naming the file.

    A compressed file is decompressed once to its end here: a truncated or corrupt stream would
    otherwise surface mid-run, after part of the output exists (gzip is read at hundreds of MB/s,
    little next to the per-record work). Text must be UTF-8: a UTF-16/32 byte-order mark is refused
    with the conversion to run, since reading such a file as UTF-8 would reject every line.
    """
    for path in files:
        if path.startswith(CORPUS_PREFIX) or _format_of(path) == "parquet":
            continue
        with open(path, "rb") as raw:
            head = _verified_head(path, raw)
        for bom, encoding in _BOMS:
            if head.startswith(bom):
                raise ConfigError(f"{path}: {encoding} text (byte-order mark {bom.hex(' ').upper()}); lmforge reads "
                                  f"UTF-8: convert it first, e.g. iconv -f {encoding} -t UTF-8 FILE > FILE.utf8")


def _verified_head(path: str, raw: BinaryIO) -> bytes:
    """The first 4 bytes of the file's content, after checking a compressed stream to its end."""
    lower = path.lower()
    if not lower.endswith(COMPRESSIONS):
        return raw.read(4)
    magic, name = (_GZIP_MAGIC, "gzip") if lower.endswith(".gz") else (_ZSTD_MAGIC, "zstd")
    start = raw.read(len(magic))
    raw.seek(0)
    if start and start != magic:
        raise ConfigError(f"{path}: not a {name} file (it starts with bytes {start.hex(' ')}), though named .{lower.rsplit('.', 1)[1]}")
    return _verified_gzip_head(path, raw) if name == "gzip" else _verified_zstd_head(path, raw)


def _verified_gzip_head(path: str, raw: BinaryIO) -> bytes:
    try:
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            head = stream.read(4)
            while stream.read(1 << 20):
                pass
    except EOFError:
        raise ConfigError(f"{path}: truncated gzip file: the compressed data ends before its end marker "
                          f"(an interrupted download or copy?)") from None
    except gzip.BadGzipFile as exc:
        if str(exc).startswith("Not a gzipped file"):  # the stream ended, then bytes that start no new member
            raise ConfigError(f"{path}: damaged gzip file: bytes after the end of the gzip data are not gzip "
                              f"(appended garbage?)") from None
        raise ConfigError(f"{path}: damaged gzip file ({exc})") from None
    except zlib.error as exc:
        raise ConfigError(f"{path}: damaged gzip file ({exc})") from None
    return head


def _verified_zstd_head(path: str, raw: BinaryIO) -> bytes:
    import zstandard

    # decompressobj, not stream_reader: stream_reader reports a truncated frame as a clean end.
    head, frame, chunk = b"", None, b""
    try:
        while True:
            chunk = chunk or raw.read(1 << 16)
            if not chunk:
                break
            frame = frame or zstandard.ZstdDecompressor().decompressobj()
            out = frame.decompress(chunk)
            head = head if len(head) >= 4 else (head + out)[:4]
            chunk = b""
            if frame.eof:  # a file may hold several frames one after another
                chunk, frame = frame.unused_data, None
    except zstandard.ZstdError as exc:
        raise ConfigError(f"{path}: damaged zstd file ({exc})") from None
    if frame is not None:
        raise ConfigError(f"{path}: truncated zstd file: the compressed data ends inside a frame "
                          f"(an interrupted download or copy?)")
    return head


class ReadPosition:
    """How many bytes of the inputs (as stored on disk, compressed or not) have been consumed."""

    def __init__(self) -> None:
        self.finished = 0
        self.current: Optional[BinaryIO] = None

    def bytes_done(self) -> int:
        try:
            return self.finished + (self.current.tell() if self.current is not None else 0)
        except (OSError, ValueError):
            return self.finished


def input_size(files: list[str]) -> int:
    """Bytes on disk of the inputs (built-in corpora count their package files)."""
    total = 0
    for path in files:
        if path.startswith(CORPUS_PREFIX):
            total += get_corpus(path[len(CORPUS_PREFIX) :]).size()
        else:
            total += os.path.getsize(path)
    return total


def parse_record(record: RawRecord, config: InputConfig) -> RawRecord:
    """This record with its JSON line parsed into text, label and fields (or an error)."""
    if record.json_line is None:
        return record
    try:
        obj = json.loads(record.json_line)
    except json.JSONDecodeError as exc:
        return RawRecord(record.source, record.line, error="malformed_json", detail=f"column {exc.colno}: {exc.msg}",
                         text=record.json_line)
    except RecursionError:  # the parser recurses once per nesting level
        return RawRecord(record.source, record.line, error="too_deeply_nested", detail=_TOO_DEEP, text=record.json_line)
    return _from_mapping(obj, record.source, record.line, config)


def read_records(
    files: list[str], config: InputConfig, position: Optional[ReadPosition] = None, defer_json: bool = False
) -> Iterator[RawRecord]:
    """Stream every record of every input in order. With ``defer_json``, JSON lines come unparsed
    (``json_line`` set) so that worker processes parse them: see ``RawRecord.parsed``."""
    if not defer_json:
        yield from (parse_record(r, config) for r in read_records(files, config, position, defer_json=True))
        return
    position = position or ReadPosition()
    for path in files:
        if path.startswith(CORPUS_PREFIX):
            corpus = get_corpus(path[len(CORPUS_PREFIX) :])
            yield from corpus.records()
            position.finished += corpus.size()
            continue
        produced = False
        with open(path, "rb") as raw:
            position.current = raw
            try:
                for record in _read_file(path, raw, config):
                    produced = True
                    yield record
            except (EOFError, OSError, zlib.error, _zstd_error()) as exc:
                # check_readable refuses these up front; this catches a file damaged since.
                raise ConfigError(f"{path}: could not be read to the end ({type(exc).__name__}: {exc})") from None
            position.current = None
        position.finished += os.path.getsize(path)
        if not produced:
            yield RawRecord(source=path, line=0, error="empty_file")


def _format_of(path: str) -> Optional[str]:
    name = path.lower()
    for ext in COMPRESSIONS:
        if name.endswith(ext):
            name = name[: -len(ext)]
    for exts, fmt in (
        (TEXT_EXTENSIONS, "txt"),
        (JSON_EXTENSIONS, "json"),
        ((".csv",), "csv"),
        ((".tsv",), "tsv"),
        (PARQUET_EXTENSIONS, "parquet"),
    ):
        if name.endswith(exts):
            return fmt
    return None


def _zstd_error() -> type[Exception]:
    import zstandard

    return zstandard.ZstdError


def _decompressed(path: str, raw: BinaryIO) -> BinaryIO:
    """The file's content: gzip and zstd are undone transparently, as a stream."""
    if path.lower().endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if path.lower().endswith(".zst"):
        import zstandard

        # read_across_frames: a file may hold several frames (pzstd, concatenated files)
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=False, read_across_frames=True))
    return raw


def _read_file(path: str, raw: BinaryIO, config: InputConfig) -> Iterator[RawRecord]:
    fmt = _format_of(path)
    if fmt == "parquet":
        yield from _read_parquet(path, config)
        return
    with _decompressed(path, raw) as handle:
        lines = _decoded_lines(handle, path, max_chars=config.max_record_chars)
        if fmt == "txt":
            yield from (_read_txt_blocks(lines, path) if config.txt_mode == "block" else _read_txt_lines(lines, path))
        elif fmt == "json":
            yield from _read_json(lines, path, config)
        else:
            yield from _read_csv(lines, path, config, delimiter="\t" if fmt == "tsv" else ",")


# A decoded line: (line number, text without newline) or (line number, RawRecord error).
_Line = tuple[int, "str | RawRecord"]


def _decoded_lines(handle: BinaryIO, path: str, max_chars: int) -> Iterator[_Line]:
    """Lines as text; undecodable or over-long lines come out as error records instead."""
    max_bytes = max_chars * 4  # UTF-8 needs at most 4 bytes a character
    number = 0
    while True:
        raw = handle.readline(max_bytes + 1)
        if not raw:
            return
        number += 1
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            size = len(raw)
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line in bounded chunks
                raw = handle.readline(1 << 20)
                size += len(raw)
            yield number, RawRecord(path, number, error="record_too_long", detail=f"{size} bytes")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, RawRecord(path, number, error="invalid_utf8", detail=f"byte {exc.start}: {exc.reason}",
                                    text=raw.decode("utf-8", errors="replace").rstrip("\r\n"))
            continue
        if number == 1:
            text = text.lstrip("\ufeff")
        text = text.rstrip("\r\n")
        if len(text) > max_chars:
            yield number, RawRecord(path, number, error="record_too_long", detail=f"{len(text)} chars")
            continue
        yield number, text


def _read_txt_lines(lines: Iterator[_Line], path: str) -> Iterator[RawRecord]:
    for number, item in lines:
        yield item if isinstance(item, RawRecord) else RawRecord(path, number, text=item)


def _read_txt_blocks(lines: Iterator[_Line], path: str) -> Iterator[RawRecord]:
    block: list[str] = []
    start = 0
    for number, item in lines:
        if isinstance(item, RawRecord):
            yield item
            continue
        if item.strip():
            if not block:
                start = number
            block.append(item)
        elif block:
            yield RawRecord(path, start, text="\n".join(block))
            block = []
    if block:
        yield RawRecord(path, start, text="\n".join(block))


def _get_field(obj: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = obj
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _from_mapping(obj: Any, path: str, number: int, config: InputConfig) -> RawRecord:
    if not isinstance(obj, dict):
        return RawRecord(path, number, error="not_an_object", detail=type(obj).__name__)
    found, text = _get_field(obj, config.text_field)
    if not found:
        return RawRecord(path, number, error="missing_field", detail=config.text_field, fields=obj)
    if not isinstance(text, str):
        return RawRecord(path, number, error="wrong_type", detail=f"{config.text_field} is {type(text).__name__}")
    surrogate = lone_surrogate(text)
    if surrogate:
        return RawRecord(path, number, error="invalid_unicode", detail=surrogate,
                         text=text.encode("utf-8", "backslashreplace").decode("utf-8"))
    label = None
    if config.label_field:
        found, label = _get_field(obj, config.label_field)
        if not found or label is None or label == "":
            return RawRecord(path, number, error="missing_field", detail=config.label_field, text=text)
    pair = None
    if config.pair_field:
        found, pair = _get_field(obj, config.pair_field)
        if not found or pair is None:
            return RawRecord(path, number, error="missing_field", detail=config.pair_field, text=text)
        if not isinstance(pair, str):
            return RawRecord(path, number, error="wrong_type", detail=f"{config.pair_field} is {type(pair).__name__}",
                             text=text)
        surrogate = lone_surrogate(pair)
        if surrogate:
            return RawRecord(path, number, error="invalid_unicode", detail=f"{config.pair_field}: {surrogate}", text=text)
    top = {config.text_field.split(".")[0], (config.label_field or "").split(".")[0],
           (config.pair_field or "").split(".")[0]}
    fields = {k: v for k, v in obj.items() if k not in top}
    return RawRecord(path, number, text=text, label=label, pair=pair, fields=fields)


def _read_json(lines: Iterator[_Line], path: str, config: InputConfig) -> Iterator[RawRecord]:
    first = next(lines, None)
    if first is None:
        return
    number, item = first
    if isinstance(item, str) and item.lstrip().startswith("["):
        yield from _read_json_array(_chain_first(first, lines), path, config)
        return
    for number, item in _chain_first(first, lines):
        if isinstance(item, RawRecord):
            yield item
            continue
        if not item.strip():
            yield RawRecord(path, number, error="empty")
            continue
        yield RawRecord(path, number, json_line=item)


_SPACE = re.compile(r"\s*")


def _read_json_array(lines: Iterator[_Line], path: str, config: InputConfig) -> Iterator[RawRecord]:
    """A JSON array, the one format that cannot stream line by line: read whole, then parsed one element
    at a time, so that each element is a record at its own line and damage stays with its element.

    An unreadable line (bad UTF-8, too long) rejects the element that spans it; a syntax error
    ends the array in one malformed_json record that says the rest is not read.
    """
    texts: list[str] = []
    damaged: dict[int, RawRecord] = {}  # line number -> why that line could not be read
    for number, item in lines:
        if isinstance(item, RawRecord):
            damaged[number] = item
            # bad bytes read as U+FFFD keep the line's JSON shape; a too-long line becomes blank
            texts.append(item.text if item.error == "invalid_utf8" and item.text else "")
        else:
            texts.append(item)
    body = "\n".join(texts)
    starts = [0]
    for text in texts[:-1]:
        starts.append(starts[-1] + len(text) + 1)

    def line_of(offset: int) -> int:
        return bisect.bisect_right(starts, offset)

    unseen = sorted(damaged)  # damaged lines not yet reported, in file order

    def damage_before(line: int) -> Iterator[RawRecord]:
        while unseen and unseen[0] < line:
            yield damaged[unseen.pop(0)]

    decoder = json.JSONDecoder()
    pos = _SPACE.match(body, body.index("[") + 1).end()
    if body.startswith("]", pos):
        pos += 1
    else:
        while True:
            first_line = line_of(pos)
            try:
                obj, end = decoder.raw_decode(body, pos)
            except (json.JSONDecodeError, RecursionError) as exc:
                line = exc.lineno if isinstance(exc, json.JSONDecodeError) else first_line
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else _TOO_DEEP
                yield from damage_before(first_line)
                yield RawRecord(path, line, error="malformed_json" if isinstance(exc, json.JSONDecodeError)
                                else "too_deeply_nested", detail=f"{reason}; the rest of the array is not read")
                return
            last_line = line_of(end - 1)
            yield from damage_before(first_line)
            spanned = [n for n in unseen if n <= last_line]
            if spanned:
                bad = damaged[spanned[0]]
                del unseen[: len(spanned)]
                yield RawRecord(path, first_line, error=bad.error, detail=f"line {spanned[0]}: {bad.detail}",
                                text=bad.text)
            else:
                yield _from_mapping(obj, path, first_line, config)
            pos = _SPACE.match(body, end).end()
            if body.startswith(",", pos):
                pos = _SPACE.match(body, pos + 1).end()
                continue
            if body.startswith("]", pos):
                pos += 1
                break
            yield from damage_before(line_of(pos) + 1)
            yield RawRecord(path, line_of(pos), error="malformed_json",
                            detail="expected ',' or ']' after an array element; the rest of the array is not read")
            return
    yield from damage_before(len(texts) + 1)
    if _SPACE.match(body, pos).end() < len(body):
        yield RawRecord(path, line_of(_SPACE.match(body, pos).end()), error="malformed_json",
                        detail="extra data after the end of the array")


def _chain_first(first: _Line, rest: Iterator[_Line]) -> Iterator[_Line]:
    yield first
    yield from rest


def _read_csv(lines: Iterator[_Line], path: str, config: InputConfig, delimiter: str) -> Iterator[RawRecord]:
    errors: list[RawRecord] = []
    current = [0]

    def text_lines() -> Iterator[str]:
        for number, item in lines:
            current[0] = number
            if isinstance(item, RawRecord):
                errors.append(item)  # reported in order right after the row being assembled
                continue
            yield item + "\n"

    csv.field_size_limit(max(config.max_record_chars, 131072))
    reader = csv.reader(text_lines(), delimiter=delimiter)
    header: Optional[list[str]] = None
    while True:
        try:
            row: Optional[list[str]] = next(reader)
        except StopIteration:
            row = None
        except csv.Error as exc:
            yield from errors
            errors.clear()
            yield RawRecord(path, current[0], error="malformed_row", detail=str(exc))
            continue
        yield from errors  # unreadable lines met while assembling this row, in file order
        errors.clear()
        if row is None:
            return
        if header is None:
            header = row
            continue
        end = current[0]  # the row's last physical line (quoted fields may span lines)
        if not row or all(not cell.strip() for cell in row):
            yield RawRecord(path, end, error="empty")
        elif len(row) != len(header):
            yield RawRecord(path, end, error="malformed_row", detail=f"{len(row)} fields, header has {len(header)}")
        else:
            yield _from_mapping(dict(zip(header, row)), path, end, config)


def _read_parquet(path: str, config: InputConfig) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for obj in batch.to_pylist():
            number += 1
            yield _from_mapping(obj, path, number, config)
