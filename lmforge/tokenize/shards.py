"""Packed token shards: the on-disk format, its writer, and a verifying reader.

SHARDS_DIR/
  meta.json            format_version, tokenizer {hash, kind, vocab_size, special_tokens}, dtype, labels,
                       splits {name: counts, source, and per shard its files' sizes and xxh3 checksums}
  tokenizer.json       a copy of the tokenizer used (its sha256 is meta's tokenizer.hash)
  <split>/shard-NNNNN.bin          token ids of whole documents, flat, little-endian uint16 or uint32
  <split>/shard-NNNNN.idx          int64 document start offsets into .bin, plus the end (n_docs + 1 values)
  <split>/shard-NNNNN.sent         int64 sentence start offsets into .bin (every document start included)
  <split>/shard-NNNNN.fields.jsonl one JSON object per document: its label and other fields (fine-tuning data)
Documents never straddle shards, and no special tokens are stored: datasets add them when batching.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import xxhash

from lmforge.config import ConfigError

FORMAT_VERSION = 1
OFFSET_DTYPE = np.dtype("<i8")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (halves disk and page-cache use), else uint32."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def checksum(data: bytes) -> str:
    return xxhash.xxh3_64_hexdigest(data)


@dataclass
class EncodedChunk:
    """Documents encoded by one worker, in input order."""

    tokens: np.ndarray  # (sum of lengths,) token ids
    lengths: np.ndarray  # (n_docs,) tokens per document
    sentences: list[list[int]]  # per document: sentence start offsets within it (0 first)
    fields: list[dict[str, Any]]
    characters: int
    text_bytes: int


@dataclass
class _OpenShard:
    name: str
    handle: Any
    hasher: Any
    doc_offsets: list[int] = field(default_factory=lambda: [0])
    sentences: list[int] = field(default_factory=list)
    fields: list[dict[str, Any]] = field(default_factory=list)


class ShardWriter:
    """Appends encoded documents to size-capped shards of one split; `close()` returns the split's meta."""

    def __init__(self, out: Path, split: str, dtype: np.dtype, shard_bytes: int) -> None:
        self.out, self.split, self.dtype = out, split, dtype
        self.cap_tokens = max(1, shard_bytes // dtype.itemsize)
        (out / split).mkdir(parents=True, exist_ok=True)
        self.shards: list[dict[str, Any]] = []
        self.labels: dict[str, int] = {}
        self.field_names: set[str] = set()
        self.counts = {"documents": 0, "tokens": 0, "sentences": 0, "characters": 0, "text_bytes": 0}
        self._shard: Optional[_OpenShard] = None

    def add(self, chunk: EncodedChunk) -> None:
        self.counts["characters"] += chunk.characters
        self.counts["text_bytes"] += chunk.text_bytes
        tokens = chunk.tokens.astype(self.dtype, copy=False)
        start = 0
        for length, sentences, fields in zip(chunk.lengths.tolist(), chunk.sentences, chunk.fields):
            shard = self._shard
            if shard is None or (shard.doc_offsets[-1] + length > self.cap_tokens and len(shard.doc_offsets) > 1):
                shard = self._open()
            data = tokens[start : start + length].tobytes()
            shard.handle.write(data)
            shard.hasher.update(data)
            base = shard.doc_offsets[-1]
            shard.sentences.extend(base + s for s in sentences)
            shard.doc_offsets.append(base + length)
            shard.fields.append(fields)
            self.field_names.update(fields)
            if "label" in fields:
                key = str(fields["label"])
                self.labels[key] = self.labels.get(key, 0) + 1
            start += length
            self.counts["documents"] += 1
            self.counts["tokens"] += length
            self.counts["sentences"] += len(sentences)

    def _open(self) -> _OpenShard:
        self._close_shard()
        name = f"{self.split}/shard-{len(self.shards):05d}"
        self._shard = _OpenShard(name, open(self.out / f"{name}.bin", "wb"), xxhash.xxh3_64())
        return self._shard

    def _close_shard(self) -> None:
        shard = self._shard
        if shard is None:
            return
        shard.handle.close()
        files = {"bin": {"bytes": shard.doc_offsets[-1] * self.dtype.itemsize, "xxh3": shard.hasher.hexdigest()}}
        files["idx"] = _write(self.out / f"{shard.name}.idx", np.asarray(shard.doc_offsets, OFFSET_DTYPE).tobytes())
        files["sent"] = _write(self.out / f"{shard.name}.sent", np.asarray(shard.sentences, OFFSET_DTYPE).tobytes())
        if any(shard.fields):
            lines = "".join(json.dumps(f, ensure_ascii=False, sort_keys=True) + "\n" for f in shard.fields)
            files["fields"] = _write(self.out / f"{shard.name}.fields.jsonl", lines.encode("utf-8"))
        self.shards.append({
            "name": shard.name,
            "documents": len(shard.doc_offsets) - 1,
            "tokens": shard.doc_offsets[-1],
            "files": files,
        })
        self._shard = None

    def close(self) -> dict[str, Any]:
        self._close_shard()
        meta: dict[str, Any] = dict(self.counts)
        meta["fields"] = sorted(self.field_names)
        if self.labels:
            meta["label_counts"] = dict(sorted(self.labels.items()))
        meta["shards"] = self.shards
        return meta


def _write(path: Path, data: bytes) -> dict[str, Any]:
    path.write_bytes(data)
    return {"bytes": len(data), "xxh3": checksum(data)}


def read_meta(shards_dir: str | Path) -> dict[str, Any]:
    """meta.json of a shards directory, after checking that every split was made with its tokenizer."""
    shards_dir = Path(shards_dir)
    path = shards_dir / "meta.json"
    if not path.is_file():
        raise ConfigError(f"{shards_dir}: not a shards directory (no meta.json); make one with `lmforge data tokenize`")
    if not (shards_dir / "DONE").is_file():
        raise ConfigError(f"{shards_dir} is not a finished `lmforge data tokenize` output (no DONE marker)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path}: format_version {meta.get('format_version')!r}, this lmforge reads {FORMAT_VERSION}")
    expected = meta["tokenizer"]["hash"]
    copy = shards_dir / "tokenizer.json"
    if copy.is_file() and hashlib.sha256(copy.read_bytes()).hexdigest() != expected:
        raise ConfigError(f"{copy} is not the tokenizer these shards were made with (meta.json tokenizer.hash {expected[:12]})")
    for name, split in meta["splits"].items():
        if split.get("tokenizer_hash") != expected:
            raise ConfigError(
                f"{path}: split '{name}' was made with tokenizer {str(split.get('tokenizer_hash'))[:12]}, the others with "
                f"{expected[:12]}; shards from different tokenizers cannot be mixed (re-run `lmforge data tokenize`)"
            )
    return meta


def check_tokenizer(meta: dict[str, Any], tokenizer_hash: str, where: str) -> None:
    """Refuse shards made with a tokenizer other than the one a model or run uses."""
    made_with = meta["tokenizer"]["hash"]
    if made_with != tokenizer_hash:
        raise ConfigError(
            f"{where}: shards were made with tokenizer {made_with[:12]} but this run uses {tokenizer_hash[:12]}; "
            "re-tokenize the data with this tokenizer"
        )


class ShardReader:
    """All documents of one split, memory-mapped; every file is checked against meta.json when opened."""

    def __init__(self, shards_dir: str | Path, split: str, verify: bool = True) -> None:
        self.dir = Path(shards_dir)
        self.meta = read_meta(self.dir)
        if split not in self.meta["splits"]:
            raise ConfigError(f"{self.dir}: no split '{split}' (has: {', '.join(self.meta['splits']) or 'none'})")
        self.split = split
        self.split_meta = self.meta["splits"][split]
        self.dtype = np.dtype(self.meta["dtype"])
        self._verify = verify
        self._tokens: Optional[list[np.ndarray]] = None
        offsets, sentences, shard_of = [], [], []
        for number, shard in enumerate(self.split_meta["shards"]):
            for kind in shard["files"]:
                self._check(shard, kind)
            idx = np.fromfile(self.dir / f"{shard['name']}.idx", OFFSET_DTYPE)
            if len(idx) != shard["documents"] + 1 or idx[-1] != shard["tokens"] or np.any(np.diff(idx) < 0):
                raise ConfigError(f"{self.dir / shard['name']}.idx: document index does not match its shard")
            offsets.append(idx)
            sentences.append(np.fromfile(self.dir / f"{shard['name']}.sent", OFFSET_DTYPE))
            shard_of.append(np.full(shard["documents"], number, np.int32))
        self._sentences = sentences
        self.doc_shard = np.concatenate(shard_of) if shard_of else np.zeros(0, np.int32)  # (n_docs,)
        self.doc_start = np.concatenate([o[:-1] for o in offsets]) if offsets else np.zeros(0, np.int64)
        self.doc_length = np.concatenate([np.diff(o) for o in offsets]) if offsets else np.zeros(0, np.int64)
        # per document, its range in its shard's sentence array
        self._sent_lo = np.concatenate([np.searchsorted(s, o[:-1]) for s, o in zip(sentences, offsets)] or [np.zeros(0, np.int64)])
        self._sent_hi = np.concatenate([np.searchsorted(s, o[1:]) for s, o in zip(sentences, offsets)] or [np.zeros(0, np.int64)])
        self._fields: Optional[list[dict[str, Any]]] = None

    def _check(self, shard: dict[str, Any], kind: str) -> None:
        suffix = ".fields.jsonl" if kind == "fields" else f".{kind}"
        path = self.dir / f"{shard['name']}{suffix}"
        expected = shard["files"][kind]
        if not path.is_file():
            raise ConfigError(f"{path}: shard file missing")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise ConfigError(f"{path}: truncated or corrupted shard: {size:,} bytes, meta.json says {expected['bytes']:,}")
        if self._verify:
            hasher = xxhash.xxh3_64()
            with open(path, "rb") as handle:
                while block := handle.read(1 << 24):
                    hasher.update(block)
            if hasher.hexdigest() != expected["xxh3"]:
                raise ConfigError(f"{path}: corrupted shard: checksum {hasher.hexdigest()} does not match meta.json")

    def __len__(self) -> int:
        return len(self.doc_length)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tokens"] = None  # memory maps are reopened in the receiving process, never pickled
        return state

    @property
    def tokens(self) -> list[np.ndarray]:
        if self._tokens is None:
            self._tokens = [
                np.memmap(self.dir / f"{s['name']}.bin", dtype=self.dtype, mode="r", shape=(s["tokens"],))
                if s["tokens"] else np.zeros(0, self.dtype)
                for s in self.split_meta["shards"]
            ]
        return self._tokens

    def document(self, i: int) -> np.ndarray:
        """Token ids of document i, (length,) in the shard dtype (a view into the memory map)."""
        start = int(self.doc_start[i])
        return self.tokens[int(self.doc_shard[i])][start : start + int(self.doc_length[i])]

    def sentence_starts(self, i: int) -> np.ndarray:
        """Start offsets of document i's sentences within the document, (n_sentences,), 0 first."""
        sentences = self._sentences[int(self.doc_shard[i])]
        return sentences[int(self._sent_lo[i]) : int(self._sent_hi[i])] - int(self.doc_start[i])

    @property
    def fields(self) -> list[dict[str, Any]]:
        """Per document, its label and other fields ({} where a shard has none)."""
        if self._fields is None:
            fields: list[dict[str, Any]] = []
            for shard in self.split_meta["shards"]:
                if "fields" in shard["files"]:
                    with open(self.dir / f"{shard['name']}.fields.jsonl", encoding="utf-8") as handle:
                        fields.extend(json.loads(line) for line in handle)
                else:
                    fields.extend({} for _ in range(shard["documents"]))
            self._fields = fields
        return self._fields

    @property
    def sentence_counts(self) -> np.ndarray:
        """(n_docs,) sentences per document."""
        return self._sent_hi - self._sent_lo
