"""`lmforge data prepare`: raw inputs to train/validation/test splits, a rejection log and a report.

Two streaming passes with bounded memory:
  1. read -> clean -> filter -> scrub PII -> hash, in worker processes over ordered chunks;
     kept texts go to a spool file on disk, rejections straight to rejected.jsonl, and only
     compact state (an exact hash and a MinHash signature per kept text) stays for the corpus.
  2. after dedup and split assignment on that compact state, the spool is read once more and
     every kept text is written to its split, or to rejected.jsonl as a duplicate or conflict.
Results do not depend on the worker count: chunks are processed in order and every decision
is keyed to a document's position in read order.
"""

from __future__ import annotations

import json
import multiprocessing
from array import array
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from lmforge.config import ConfigError, build_config, write_config
from lmforge.data.config import PRESETS, PrepareConfig, resolve_preset
from lmforge.data.dedup import EXACT_DUPLICATE, KEEP, LABEL_CONFLICT, NEAR_DUPLICATE, DedupResult, find_duplicates
from lmforge.data.records import RawRecord
from lmforge.data.readers import CORPUS_PREFIX, ReadPosition, check_columns, check_readable, expand_inputs, input_size, read_records
from lmforge.data.report import PrepareStats, build_report, print_prepare_summary
from lmforge.data.split import SPLITS, assign_splits
from lmforge.data.process_chunk import (
    ChunkProcessor,
    ChunkResult,
    init_worker,
    pair_jaccard_job,
    parse_spool_line,
    process_in_worker,
    rejected_line,
)
from lmforge.data.writers import RecordWriter
from lmforge.progress import StageProgress

FORMAT_VERSION = 1
_STATUS_REASON = {EXACT_DUPLICATE: "exact_duplicate", NEAR_DUPLICATE: "near_duplicate", LABEL_CONFLICT: "label_conflict"}


def make_prepare_config(*layers: dict[str, Any], source: str = "config") -> PrepareConfig:
    """Resolve the preset, lay it under the user's layers, and validate the result."""
    layers_list = list(layers)
    paths = [p for layer in layers_list for p in (layer.get("input") or {}).get("paths", [])]
    base: dict[str, Any] = {}
    if any(_is_labelled_corpus(p) for p in paths):
        base = {"input": {"label_field": "label"}}
    preset = resolve_preset([base, *layers_list])
    return build_config(PrepareConfig, base, PRESETS[preset], *layers_list, {"preset": preset}, source=source)


def _is_labelled_corpus(path: str) -> bool:
    if not path.startswith(CORPUS_PREFIX):
        return False
    from lmforge.corpora import CORPORA

    corpus = CORPORA.get(path[len(CORPUS_PREFIX) :])
    return bool(corpus and corpus.labelled)


def prepare(config: PrepareConfig) -> dict[str, Any]:
    """Run the whole stage; returns the report (also written to ``out/report.json``)."""
    if not config.out:
        raise ConfigError("no output directory: give --out DIR")
    files = expand_inputs(config.input.paths)
    check_readable(files)
    check_columns(files, config.input)
    if config.output.format == "parquet":
        _require_pyarrow()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "DONE").unlink(missing_ok=True)
    work = out / ".work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    write_config(config, out / "config.yaml")

    started = time.perf_counter()
    stats = PrepareStats(files=files, preset=config.preset or "", labelled=config.input.label_field is not None)
    with RecordWriter(out / "rejected.jsonl", "jsonl") as rejected:
        state = _first_pass(config, files, work, rejected, stats)
        stats.seconds_pass1 = time.perf_counter() - started
        result = _deduplicate(config, state)
        split_of = _assign(config, state, result)
        _second_pass(config, state, result, split_of, out, rejected, stats)
    stats.seconds_total = time.perf_counter() - started
    report = build_report(config, stats, result.stats)
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    fields = {"text": "text", **({"label": "label"} if config.input.label_field else {}),
              **({"pair": "pair"} if config.input.pair_field else {})}
    (out / "DONE").write_text(json.dumps({"format_version": FORMAT_VERSION, "fields": fields}) + "\n")
    if config.progress:
        print_prepare_summary(report, out)
    return report


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ConfigError("output.format=parquet needs pyarrow: pip install 'lmforge[parquet]'") from None


class _KeptState:
    """Compact per-document state of the kept texts, in read order; the texts wait in a spool file."""

    def __init__(self, work: Path, num_perm: int, labelled: bool) -> None:
        self.labelled = labelled
        self.spool_path = work / "kept.spool"
        self.signature_path = work / "signatures.u32"
        self.spool = open(self.spool_path, "wb")
        self.signature_file = open(self.signature_path, "wb")
        self.offsets = array("q")  # 8 bytes a document: only compact state is held for the corpus
        self.hashes: list[np.ndarray] = []
        self.side_hashes: list[np.ndarray] = []  # text pairs: (kept, 2) per chunk
        self.label_ids = array("q")
        self.label_names: dict[str, int] = {}
        self.num_perm = num_perm
        self.count = 0

    def add(self, result: ChunkResult) -> None:
        position = self.spool.tell()
        for line in result.spool_lines:
            self.offsets.append(position)
            position += len(line)
        self.spool.write(b"".join(result.spool_lines))
        for label in result.kept_labels:
            self.label_ids.append(self.label_names.setdefault(label, len(self.label_names)))
        self.hashes.append(result.exact_hashes)
        if result.side_hashes is not None:
            self.side_hashes.append(result.side_hashes)
        if result.signatures is not None:
            self.signature_file.write(np.ascontiguousarray(result.signatures).tobytes())
        self.count += len(result.spool_lines)

    def close(self) -> None:
        self.spool.close()
        self.signature_file.close()

    def signatures(self) -> Optional[np.ndarray]:
        if self.count == 0 or self.signature_path.stat().st_size == 0:
            return None
        return np.memmap(self.signature_path, dtype=np.uint32, mode="r", shape=(self.count, self.num_perm))

    def labels(self) -> Optional[np.ndarray]:
        return np.frombuffer(self.label_ids, dtype=np.int64) if self.labelled else None

    def lines(self) -> Iterator[bytes]:
        with open(self.spool_path, "rb") as handle:
            yield from handle


def _chunks(records: Iterator[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    chunk: list[RawRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _processed(config: PrepareConfig, chunks: Iterator[list[RawRecord]]) -> Iterator[ChunkResult]:
    """Chunk results in input order; at most 2 chunks per worker in flight (bounded memory)."""
    if config.workers == 1:
        processor = ChunkProcessor(config)
        for chunk in chunks:
            yield processor(chunk)
        return
    with _pool_context().Pool(config.workers, initializer=init_worker, initargs=(config,)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(process_in_worker, (chunk,)))
            if len(pending) >= 2 * config.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _pool_context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _first_pass(
    config: PrepareConfig, files: list[str], work: Path, rejected: RecordWriter, stats: PrepareStats
) -> _KeptState:
    state = _KeptState(work, config.dedup.num_perm, labelled=config.input.label_field is not None)
    position = ReadPosition()
    records = read_records(files, config.input, position, defer_json=True)
    with StageProgress("prepare", input_size(files), enabled=config.progress) as progress:
        for result in _processed(config, _chunks(records, config.chunk_size)):
            stats.read += result.read
            for (stage, reason), count in result.rejections.items():
                stats.count_rejection(stage, reason, count)
            rejected.write_lines(result.rejected_lines)
            state.add(result)
            stats.pii.update(result.pii)
            stats.pii_documents += result.pii_documents
            progress.update(position.bytes_done(), stats.read)
    state.close()
    stats.passed_filters = state.count
    return state


def _group_keys(config: PrepareConfig, state: _KeptState) -> Optional[np.ndarray]:
    """Text pairs: the sides (exact hashes) whose repeats must stay in one split (split.pair_sides)."""
    if not state.side_hashes:
        return None
    sides = np.concatenate(state.side_hashes)  # (N, 2)
    return sides[:, :1] if config.split.pair_sides == "text" else sides


def _deduplicate(config: PrepareConfig, state: _KeptState) -> DedupResult:
    hashes = np.concatenate(state.hashes) if state.hashes else np.zeros(0, np.uint64)
    dedup = config.dedup

    def exact_pairs(pairs: np.ndarray) -> np.ndarray:
        """Exact Jaccard of candidate pairs, in the worker processes when there are several."""
        parts = np.array_split(pairs, max(1, min(len(pairs) // 1000, 4 * config.workers)))
        jobs = [(str(state.spool_path), {int(i): state.offsets[int(i)] for i in np.unique(part)}, part,
                 dedup.word_ngram, dedup.char_ngram) for part in parts]
        if config.workers == 1 or len(jobs) == 1:
            return np.concatenate([pair_jaccard_job(job) for job in jobs])
        with _pool_context().Pool(config.workers) as pool:
            return np.concatenate(pool.map(pair_jaccard_job, jobs))

    return find_duplicates(
        hashes,
        state.signatures(),
        state.labels(),
        threshold=dedup.threshold,
        group_threshold=config.split.group_threshold,
        bands=dedup.bands,
        rows=dedup.rows,
        exact=dedup.exact,
        near=dedup.near,
        exact_pairs=exact_pairs if dedup.verify == "exact" else None,
        group_keys=_group_keys(config, state),
    )


def _assign(config: PrepareConfig, state: _KeptState, result: DedupResult) -> np.ndarray:
    labels = state.labels()
    strata = (_strata(labels, state.label_names) if (labels is not None and config.split.stratify)
              else np.zeros(state.count, np.int64))
    keep = np.flatnonzero(result.status == KEEP)
    split_of = np.full(state.count, -1, dtype=np.int8)
    split_of[keep] = assign_splits(
        result.group[keep], strata[keep], (config.split.train, config.split.validation, config.split.test), config.split.seed
    )
    return split_of


NUMERIC_BINS = 10  # strata of a numeric (regression) label: its deciles


def _strata(labels: np.ndarray, names: dict[str, int]) -> np.ndarray:
    """(N,) stratum per document: its label id; for numbers with more than 2 * NUMERIC_BINS distinct
    values (a regression target), the decile of its value, since a stratum of one goes whole to train."""
    values = []
    for name in sorted(names, key=names.__getitem__):
        try:
            values.append(float(name))
        except ValueError:
            return labels
    if len(values) <= 2 * NUMERIC_BINS or not np.isfinite(values).all():
        return labels
    per_doc = np.asarray(values)[labels]  # (N,)
    edges = np.quantile(per_doc, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1])
    return np.searchsorted(edges, per_doc, side="right").astype(np.int64)


def _second_pass(
    config: PrepareConfig,
    state: _KeptState,
    result: DedupResult,
    split_of: np.ndarray,
    out: Path,
    rejected: RecordWriter,
    stats: PrepareStats,
) -> None:
    fmt = config.output.format
    names = {index: name for name, index in state.label_names.items()}
    writers = {name: RecordWriter(out / f"{name}.{fmt}", fmt) for name in SPLITS}
    try:
        for index, line in enumerate(state.lines()):
            source, number, row = parse_spool_line(line)
            status = int(result.status[index])
            cluster, size = int(result.cluster[index]), int(result.cluster_size[index])
            if size >= 2:
                stats.observe_cluster(index, cluster, size, status, _record(source, number, row))
            if status != KEEP:
                detail = f"cluster {cluster} of {size}" + ("" if status == LABEL_CONFLICT else f", kept document {cluster}")
                stats.count_rejection("dedup", _STATUS_REASON[status])
                text_chars = config.output.rejected_text_chars
                rejected.write_lines([rejected_line(_record(source, number, row), _STATUS_REASON[status], detail, "dedup", text_chars)])
                continue
            split = SPLITS[int(split_of[index])]
            meta = {"source": source, "line": number, "doc": index, "dup_cluster": cluster,
                    "dup_cluster_size": size, "split_group": int(result.group[index])}
            # The row is a JSON object ending in "}\n": append the meta without re-parsing the row.
            writers[split].write_json_row(row, meta)
            stats.count_split(split, names.get(state.label_ids[index]) if state.labelled else None)
    finally:
        for writer in writers.values():
            writer.close()


def _record(source: str, number: int, row: bytes) -> RawRecord:
    data = json.loads(row)
    return RawRecord(source, number, text=data.pop("text"), label=data.pop("label", None), fields=data)
