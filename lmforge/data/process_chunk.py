"""The per-record work of `data prepare`, run on chunks inside worker processes.

A chunk of RawRecords goes in; what comes out is, for each record in order, either a rejection
(reason, detail) or a cleaned, scrubbed text, plus compact dedup state for the kept texts
(exact hashes and MinHash signatures) and counters for the report.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional


import numpy as np
import xxhash

from lmforge.data.clean import clean_text
from lmforge.data.config import PrepareConfig
from lmforge.data.filters import apply_rules, build_rules
from lmforge.data.minhash import MinHasher, exact_jaccard_pairs
from lmforge.data.pii import PIIScrubber
from lmforge.data.readers import parse_record
from lmforge.data.records import RawRecord


@dataclass
class ChunkResult:
    """What a worker sends back for one chunk; rows come serialised so the main process only writes."""

    read: int = 0
    rejections: Counter = field(default_factory=Counter)  # (stage, reason) -> count
    rejected_lines: list[bytes] = field(default_factory=list)  # rows for rejected.jsonl, in input order
    spool_lines: list[bytes] = field(default_factory=list)  # one per kept text, see spool_line()
    kept_labels: list[str] = field(default_factory=list)  # label key per kept text (labelled data only)
    exact_hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # (kept,)
    signatures: Optional[np.ndarray] = None  # (kept, num_perm) uint32, None when near-dedup is off
    side_hashes: Optional[np.ndarray] = None  # (kept, 2) uint64: text pairs, each side's exact hash
    pii: Counter = field(default_factory=Counter)
    pii_documents: int = 0


def spool_line(record: RawRecord, labelled: bool) -> bytes:
    """A kept text as stored between the passes: ``[source, line]`` TAB the output row, one line.

    The row is already the split file's JSON object minus its meta, so the second pass can append
    the meta without parsing the row again.
    """
    row: dict[str, Any] = {"text": record.text}
    if record.pair is not None:
        row["pair"] = record.pair
    if labelled:
        row["label"] = record.label
    row.update(record.fields)
    head = json.dumps([record.source, record.line], ensure_ascii=False)
    return f"{head}\t{json.dumps(row, ensure_ascii=False)}\n".encode("utf-8")


def parse_spool_line(line: bytes) -> tuple[str, int, bytes]:
    """(source, line number, the JSON row with its trailing newline)."""
    head, row = line.split(b"\t", 1)
    source, number = json.loads(head)
    return source, number, row


def rejected_line(record: RawRecord, reason: str, detail: str, stage: str, text_chars: int) -> bytes:
    text = record.text if record.text is None or len(record.text) <= text_chars else record.text[:text_chars] + "…"
    row: dict[str, Any] = {"reason": reason, "detail": detail, "stage": stage, "source": record.source,
                           "line": record.line, "text": text}
    if record.pair is not None:
        row["pair"] = record.pair if len(record.pair) <= text_chars else record.pair[:text_chars] + "…"
    if record.label is not None:
        row["label"] = record.label
    try:
        return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (see lmforge.text.lone_surrogate): ASCII JSON keeps them as escapes
        return (json.dumps(row) + "\n").encode("ascii")


def exact_key(text: str) -> int:
    """Hash of the text as exact dedup sees it: case-folded, whitespace collapsed."""
    return xxhash.xxh3_64_intdigest(" ".join(text.lower().split()).encode("utf-8"))


PAIR_JOIN = "\n\u241e\n"  # between the two sides of a pair where they are hashed as one (U+241E: ␞)


def dedup_text(text: str, pair: Optional[str]) -> str:
    """What dedup compares: the text, or both sides of a pair (so a question with two different
    candidates is two documents, not a duplicate or a label conflict)."""
    return text if pair is None else text + PAIR_JOIN + pair


class ChunkProcessor:
    """Holds the compiled rules of one configuration; one instance per worker process."""

    def __init__(self, config: PrepareConfig) -> None:
        self.config = config
        self.rules = build_rules(config.filters)
        self.scrubber = PIIScrubber(config.pii) if config.pii.enabled else None
        dedup = config.dedup
        self.minhasher = (
            MinHasher(dedup.num_perm, dedup.word_ngram, dedup.char_ngram, dedup.seed) if dedup.near else None
        )

    def __call__(self, records: list[RawRecord]) -> ChunkResult:
        result = ChunkResult(read=len(records))
        kept_texts: list[str] = []
        kept_sides: list[tuple[int, int]] = []  # text pairs: each side's exact hash, for split groups
        labelled = self.config.input.label_field is not None
        for record in records:
            record = parse_record(record, self.config.input)
            if record.error is not None:
                self._reject(result, record, record.error, record.detail, "read")
                continue
            try:
                text = clean_text(record.text or "", self.config.clean)
                rejection, text = apply_rules(text, self.rules)
                if rejection is None and self.scrubber is not None:
                    text, counts = self.scrubber.scrub(text)
                    if counts:
                        result.pii.update(counts)
                        result.pii_documents += 1
            except Exception as exc:  # noqa: BLE001 - one odd record must not end a long run
                self._reject(result, record, "processing_error", f"{type(exc).__name__}: {exc}", "filter")
                continue
            record.text = text
            if rejection is None and record.pair is not None:  # the second text: cleaned and scrubbed too
                record.pair = clean_text(record.pair, self.config.clean)
                if self.scrubber is not None:
                    record.pair, counts = self.scrubber.scrub(record.pair)
                    result.pii.update(counts)
                if not record.pair.strip():
                    self._reject(result, record, "empty_pair", f"{self.config.input.pair_field} is empty after "
                                 f"cleaning", "filter")
                    continue
            if rejection is not None:
                self._reject(result, record, rejection.reason, rejection.detail, "filter")
                continue
            try:
                line = spool_line(record, labelled)
            except UnicodeEncodeError as exc:  # the text was checked on reading; a label or field was not
                detail = f"lone surrogate U+{ord(exc.object[exc.start]):04X} in the label or another field"
                self._reject(result, record, "invalid_unicode", detail, "read")
                continue
            result.spool_lines.append(line)
            if labelled:
                result.kept_labels.append(label_key(record.label))
            kept_texts.append(dedup_text(text, record.pair))
            if record.pair is not None:
                kept_sides.append((exact_key(text), exact_key(record.pair)))
        result.exact_hashes = np.array([exact_key(t) for t in kept_texts], dtype=np.uint64)
        if self.config.input.pair_field:
            result.side_hashes = np.array(kept_sides, dtype=np.uint64).reshape(-1, 2)
        if self.minhasher is not None:
            result.signatures = self.minhasher.signatures(kept_texts)
        return result

    def _reject(self, result: ChunkResult, record: RawRecord, reason: str, detail: str, stage: str) -> None:
        result.rejections[(stage, reason)] += 1
        result.rejected_lines.append(rejected_line(record, reason, detail, stage, self.config.output.rejected_text_chars))


def pair_jaccard_job(job: tuple[str, dict[int, int], np.ndarray, int, int]) -> np.ndarray:
    """Exact Jaccard of candidate pairs (P, 2) -> (P,), their texts read from the spool at the given
    byte offsets. Runs in a worker process: the corpus never needs to be in memory.

    Text pairs are near duplicates only when both sides are: the smaller of the two sides' Jaccards
    (LSH found the candidates on both sides hashed as one, where a long shared passage makes two
    different short questions look alike, and their two labels a false conflict)."""
    spool_path, offsets, pairs, word_ngram, char_ngram = job
    sides: dict[int, tuple[str, Optional[str]]] = {}
    with open(spool_path, "rb") as handle:
        for index, offset in offsets.items():
            handle.seek(offset)
            row = json.loads(parse_spool_line(handle.readline())[2])
            sides[index] = (row["text"], row.get("pair"))
    ids = list(sides)
    paired = all(sides[i][1] is not None for i in ids)
    columns = ([[sides[i][0] for i in ids], [str(sides[i][1]) for i in ids]] if paired
               else [[dedup_text(*sides[i]) for i in ids]])
    similarity = None
    for texts in columns:  # each side on its own, or the whole text
        hashes, counts = MinHasher(1, word_ngram, char_ngram).shingles(texts)  # shingles only
        bounds = np.concatenate(([0], np.cumsum(counts)))
        sets = {i: np.unique(hashes[bounds[k] : bounds[k + 1]]) for k, i in enumerate(ids)}
        part = exact_jaccard_pairs(pairs, sets)
        similarity = part if similarity is None else np.minimum(similarity, part)
    assert similarity is not None
    return similarity


_PROCESSOR: Optional[ChunkProcessor] = None


def init_worker(config: PrepareConfig) -> None:
    global _PROCESSOR
    _PROCESSOR = ChunkProcessor(config)


def process_in_worker(records: list[RawRecord]) -> ChunkResult:
    assert _PROCESSOR is not None, "init_worker was not called in this process"
    return _PROCESSOR(records)


def label_key(label: Any) -> str:
    """Labels compare by their JSON-ish string form, so 1 and "1" from different files agree; a set of
    labels (a list: multi-label) by its sorted names, so ["b", "a"] and ["a", "b"] are one label."""
    if isinstance(label, list):
        return json.dumps(sorted({str(x) for x in label}), ensure_ascii=False)
    return str(label)
