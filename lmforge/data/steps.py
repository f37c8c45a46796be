"""The per-record work of `data prepare`, run on chunks inside worker processes.

A chunk of RawRecords goes in; what comes out is, for each record in order, either a rejection
(reason, detail) or a cleaned, scrubbed text, plus compact dedup state for the kept texts
(exact hashes and MinHash signatures) and counters for the report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import xxhash

from lmforge.data.clean import clean_text
from lmforge.data.config import PrepareConfig
from lmforge.data.filters import apply_rules, build_rules
from lmforge.data.minhash import MinHasher
from lmforge.data.pii import PIIScrubber
from lmforge.data.readers import RawRecord


@dataclass
class Outcome:
    record: RawRecord  # text replaced by the cleaned one when kept
    reason: Optional[str] = None  # None when kept
    detail: str = ""
    stage: str = ""


@dataclass
class ChunkResult:
    outcomes: list[Outcome]
    exact_hashes: np.ndarray  # (kept,) uint64
    signatures: Optional[np.ndarray]  # (kept, num_perm) uint32, None when near-dedup is off
    pii: Counter = field(default_factory=Counter)
    pii_documents: int = 0


def exact_key(text: str) -> int:
    """Hash of the text as exact dedup sees it: case-folded, whitespace collapsed."""
    return xxhash.xxh3_64_intdigest(" ".join(text.lower().split()).encode("utf-8"))


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
        outcomes: list[Outcome] = []
        kept_texts: list[str] = []
        pii: Counter = Counter()
        pii_documents = 0
        for record in records:
            if record.error is not None:
                outcomes.append(Outcome(record, record.error, record.detail, "read"))
                continue
            text = clean_text(record.text or "", self.config.clean)
            rejection, text = apply_rules(text, self.rules)
            if rejection is not None:
                record.text = text
                outcomes.append(Outcome(record, rejection.reason, rejection.detail, "filter"))
                continue
            if self.scrubber is not None:
                text, counts = self.scrubber.scrub(text)
                if counts:
                    pii.update(counts)
                    pii_documents += 1
            record.text = text
            outcomes.append(Outcome(record))
            kept_texts.append(text)
        hashes = np.array([exact_key(t) for t in kept_texts], dtype=np.uint64)
        signatures = self.minhasher.signatures(kept_texts) if self.minhasher is not None else None
        return ChunkResult(outcomes, hashes, signatures, pii, pii_documents)


_PROCESSOR: Optional[ChunkProcessor] = None


def init_worker(config: PrepareConfig) -> None:
    global _PROCESSOR
    _PROCESSOR = ChunkProcessor(config)


def process_in_worker(records: list[RawRecord]) -> ChunkResult:
    assert _PROCESSOR is not None, "init_worker was not called in this process"
    return _PROCESSOR(records)


def label_key(label: Any) -> str:
    """Labels compare by their JSON-ish string form, so 1 and "1" from different files agree."""
    return str(label)
