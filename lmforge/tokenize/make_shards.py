"""`lmforge data tokenize`: prepared splits -> packed token shards (see shards.py for the format).

Documents are read in order, cut into chunks, encoded in worker processes and written back in
chunk order, so the shards are byte-identical for any number of workers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from tokenizers import Encoding, Tokenizer

from lmforge.config import ConfigError, build_config, write_config
from lmforge.data.prepared import check_prepared, find_split, iter_records
from lmforge.progress import print_summary
from lmforge.tokenize.config import TokenizeConfig
from lmforge.tokenize.sentences import sentence_starts
from lmforge.tokenize.shards import FORMAT_VERSION, EncodedChunk, ShardWriter, token_dtype
from lmforge.tokenize.tokenizer import LoadedTokenizer, load_tokenizer

_worker_tokenizer: Optional[Tokenizer] = None
_worker_text_field = "text"


def make_tokenize_config(*layers: dict[str, Any], source: str = "config") -> TokenizeConfig:
    return build_config(TokenizeConfig, *layers, source=source)


def encode_chunk(tokenizer: Tokenizer, records: list[dict[str, Any]], text_field: str) -> EncodedChunk:
    """Encode documents without special tokens; each sentence start is mapped from its first character
    to the token holding it."""
    texts = [r[text_field] for r in records]
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    ids = [e.ids for e in encodings]
    lengths = np.fromiter((len(i) for i in ids), np.int64, len(ids))
    tokens = np.concatenate([np.asarray(i, np.int64) for i in ids]) if ids else np.zeros(0, np.int64)
    sentences = []
    for text, encoding in zip(texts, encodings):
        starts = [0] if encoding.ids else []
        char_starts = sentence_starts(text)
        for begin, end in zip(char_starts[1:], char_starts[2:] + [len(text)]):
            token = _token_at(encoding, begin, end)
            if token is not None and starts and starts[-1] < token < len(encoding.ids):
                starts.append(token)
        sentences.append(starts)
    fields = [{k: v for k, v in r.items() if k not in (text_field, "meta")} for r in records]
    return EncodedChunk(
        tokens=tokens,
        lengths=lengths,
        sentences=sentences,
        fields=fields,
        characters=sum(len(t) for t in texts),
        text_bytes=sum(len(t.encode("utf-8")) for t in texts),
    )


def _token_at(encoding: Encoding, begin: int, end: int) -> Optional[int]:
    """The token holding the first character of [begin, end) that has one (the normaliser may drop some)."""
    for char in range(begin, end):
        token = encoding.char_to_token(char)
        if token is not None:
            return token
    return None


def _init_worker(json_text: str, text_field: str) -> None:
    global _worker_tokenizer, _worker_text_field
    os.environ["RAYON_NUM_THREADS"] = "1"  # (spawned workers) the processes are the parallelism, not threads
    _worker_tokenizer = Tokenizer.from_str(json_text)
    _worker_text_field = text_field


def _encode_in_worker(records: list[dict[str, Any]]) -> EncodedChunk:
    assert _worker_tokenizer is not None
    return encode_chunk(_worker_tokenizer, records, _worker_text_field)


def _pool(config: TokenizeConfig, json_text: str) -> Any:
    """Worker processes that encode with one thread each. Fork is cheap; saying TOKENIZERS_PARALLELISM=false
    while forking makes the children encode sequentially without the library's fork warning."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        return context.Pool(config.workers, initializer=_init_worker, initargs=(json_text, config.text_field))
    finally:
        if previous is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def _chunks(path: Path, config: TokenizeConfig) -> Iterator[list[dict[str, Any]]]:
    records = iter_records(path, config.text_field)
    while chunk := list(islice(records, config.chunk_docs)):
        yield chunk


def _check_out(out: Path, loaded: LoadedTokenizer, config: TokenizeConfig) -> dict[str, Any]:
    """Existing splits in ``out`` that stay; refuse to add to shards made with another tokenizer."""
    meta_path = out / "meta.json"
    if not meta_path.is_file():
        return {}
    old = json.loads(meta_path.read_text(encoding="utf-8"))
    old_hash = old.get("tokenizer", {}).get("hash", "")
    if old_hash == loaded.hash:
        return {k: v for k, v in old.get("splits", {}).items() if k not in config.splits}
    if not config.overwrite:
        raise ConfigError(
            f"{out} holds shards made with another tokenizer ({old_hash[:12]}, this one is {loaded.hash[:12]}); "
            "shards from different tokenizers cannot be mixed: use a new --out directory or overwrite=true"
        )
    for name in old.get("splits", {}):
        shutil.rmtree(out / name, ignore_errors=True)
    return {}


def tokenize(config: TokenizeConfig) -> dict[str, Any]:
    """Run the stage; returns meta.json's content (run statistics go to report.json)."""
    if not config.out:
        raise ConfigError("no output directory: give --out DIR")
    if not config.data or not config.tokenizer:
        raise ConfigError("give --data PREPARED_DIR and --tokenizer DIR")
    data = check_prepared(Path(config.data))
    files = {s: find_split(data, s) for s in config.splits}
    if not any(files.values()):
        raise ConfigError(f"{data}: none of the splits {', '.join(config.splits)} found (.jsonl or .parquet)")
    loaded = load_tokenizer(config.tokenizer)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    kept = _check_out(out, loaded, config)
    (out / "DONE").unlink(missing_ok=True)
    (out / "tokenizer.json").write_text(loaded.json_text, encoding="utf-8")
    write_config(config, out / "config.yaml")

    dtype = token_dtype(loaded.vocab_size)
    started = time.perf_counter()
    splits: dict[str, Any] = dict(kept)
    pool = _pool(config, loaded.json_text) if config.workers > 1 else None
    try:
        for split, path in files.items():
            if path is None:
                continue
            shutil.rmtree(out / split, ignore_errors=True)
            writer = ShardWriter(out, split, dtype, config.shard_bytes)
            chunks = _chunks(path, config)
            encoded = (
                pool.imap(_encode_in_worker, chunks)
                if pool is not None
                else (encode_chunk(loaded.tokenizer, c, config.text_field) for c in chunks)
            )
            for chunk in encoded:
                writer.add(chunk)
            splits[split] = {"source": str(path), "tokenizer_hash": loaded.hash, **writer.close()}
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    seconds = time.perf_counter() - started

    labels = sorted({label for s in splits.values() for label in s.get("label_counts", {})})
    meta = {
        "format_version": FORMAT_VERSION,
        "tokenizer": {
            "hash": loaded.hash,
            "kind": loaded.kind,
            "vocab_size": loaded.vocab_size,
            "special_tokens": loaded.special_tokens,
        },
        "dtype": dtype.name,
        "labels": labels or None,
        "splits": dict(sorted(splits.items())),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written = [s for s in config.splits if files.get(s)]
    tokens = sum(splits[s]["tokens"] for s in written)
    text_mb = sum(splits[s]["text_bytes"] for s in written) / 1e6
    report = {
        "seconds": round(seconds, 3),
        "workers": config.workers,
        "tokens": tokens,
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "text_mb_per_second": text_mb / seconds if seconds else 0.0,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "DONE").write_text(json.dumps({"format_version": FORMAT_VERSION}) + "\n", encoding="utf-8")
    if config.progress:
        rows = [(f"{s} documents / tokens", f"{splits[s]['documents']:,} / {splits[s]['tokens']:,}") for s in written]
        rows += [
            ("dtype", dtype.name),
            ("seconds", f"{seconds:.2f}"),
            ("tokens/s", f"{report['tokens_per_second']:,.0f}"),
            ("MB/s of text", f"{report['text_mb_per_second']:.2f}"),
        ]
        print_summary("tokenize", rows)
    return meta
