"""Benchmark of the tokenizer stage on People's Daily (January 1998), all measured in one run:

1. `tokenizer train` (WordPiece, 8,000) wall time and the validation unknown-token rate;
2. `data tokenize` throughput (1 and 2 workers; reading JSON lines and writing checksummed shards
   included) next to a plain single-process `tokenizers` encode_batch loop over the same texts
   already in memory;
3. the shard readers' batches/s next to the time of the training step they must feed
   (torch.nn.TransformerEncoder, 4 layers, hidden 256, 4 heads, FFN 1024, seq 128, batch 32, AdamW).

Usage: PYTHONPATH=. python bench/tokenize_bench.py [--repeats 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import tokenizers
import torch

from bench.common import timed
from lmforge.data.prepare import make_prepare_config, prepare
from lmforge.data.prepared import iter_texts
from lmforge.tokenize.datasets import BlockDataset, SentencePairDataset
from lmforge.tokenize.make_shards import make_tokenize_config, tokenize
from lmforge.tokenize.tokenizer import make_tokenizer_config, train_tokenizer

SEQ, BATCH, VOCAB = 128, 32, 8000


def round_robin(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[float, Any]]:
    """Median time of each contender, run in turns so that a change in machine load hits them all."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), results[name]) for name in fns}


def plain_encode(tokenizer: tokenizers.Tokenizer, texts: list[str], batch: int = 512) -> int:
    tokens = 0
    for i in range(0, len(texts), batch):
        tokens += sum(len(e.ids) for e in tokenizer.encode_batch(texts[i : i + batch], add_special_tokens=False))
    return tokens


def reader_rate(make: Callable[[], Any], batches: int, workers: int, repeats: int) -> float:
    """Batches per second of the first ``batches`` batches of an epoch."""
    def run() -> None:
        ds = make()
        for n, _ in enumerate(ds.loader(num_workers=workers), start=1):
            if n == batches:
                break
    seconds, _ = timed(run, repeats)
    return batches / seconds


def train_step_seconds(repeats: int) -> float:
    """One training step of a BERT-sized-down encoder on (32, 128) tokens: forward, loss, backward, AdamW."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True)
    model = torch.nn.ModuleDict({
        "embed": torch.nn.Embedding(VOCAB, 256),
        "encoder": torch.nn.TransformerEncoder(layer, 4, enable_nested_tensor=False),
        "head": torch.nn.Linear(256, VOCAB),
    })
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))

    def step() -> None:
        hidden = model["encoder"](model["embed"](ids))  # (B, T, C)
        loss = torch.nn.functional.cross_entropy(model["head"](hidden).view(-1, VOCAB), ids.view(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: allocations, kernels
    seconds, _ = timed(step, repeats)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    results: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "tokenizers": tokenizers.__version__,
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "cores": os.cpu_count(), "load_before": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare(make_prepare_config({"input": {"paths": ["corpus:peoples-daily"]}, "out": str(root / "pd"), "progress": False}))

        def train() -> dict[str, Any]:
            return train_tokenizer(make_tokenizer_config(
                {"data": str(root / "pd"), "kind": "wordpiece", "vocab_size": VOCAB, "out": str(root / "tok"), "progress": False}
            ))

        results["train_seconds"], meta = timed(train, args.repeats)
        results["vocab_size"] = meta["vocab_size"]
        results["coverage"] = meta["coverage"]

        texts = [t for split in ("train", "validation", "test") for t in iter_texts(root / "pd" / f"{split}.jsonl")]
        text_mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        tokenizer = tokenizers.Tokenizer.from_file(str(root / "tok" / "tokenizer.json"))

        def stage(workers: int) -> Callable[[], int]:
            def run() -> int:
                meta = tokenize(make_tokenize_config({
                    "data": str(root / "pd"), "tokenizer": str(root / "tok"), "out": str(root / f"shards{workers}"),
                    "workers": workers, "progress": False,
                }))
                return sum(s["tokens"] for s in meta["splits"].values())
            return run

        timings = round_robin(
            {"plain": lambda: plain_encode(tokenizer, texts), "workers_1": stage(1), "workers_2": stage(2)}, args.repeats
        )
        seconds, tokens = timings["plain"]
        results["plain_encode_batch"] = {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "mb_per_s": text_mb / seconds}
        for workers in (1, 2):
            seconds, count = timings[f"workers_{workers}"]
            assert count == tokens, (count, tokens)  # the same text, the same tokens
            results[f"data_tokenize_workers_{workers}"] = {
                "seconds": seconds, "tokens_per_s": count / seconds, "mb_per_s": text_mb / seconds,
            }

        shards = str(root / "shards1")
        results["train_step_seconds"] = train_step_seconds(args.repeats)
        makers = {
            "BlockDataset": lambda: BlockDataset(shards, "train", SEQ, BATCH, seed=0),
            "SentencePairDataset(nsp)": lambda: SentencePairDataset(shards, "train", SEQ, BATCH, seed=0),
        }
        results["readers"] = {}
        for name, make in makers.items():
            total = len(make())
            for workers in (0, 2):
                results["readers"][f"{name}, workers={workers}"] = {
                    "batches_per_s": reader_rate(make, min(total, 200), workers, args.repeats), "batches_per_epoch": total,
                }
    results["load_after"] = os.getloadavg()[0]
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def print_table(r: dict[str, Any]) -> None:
    cov = r["coverage"]
    print(f"python {r['python']}, torch {r['torch']}, tokenizers {r['tokenizers']}, {r['cores']} cores, "
          f"torch threads {r['threads']}, 1-min load average {r['load_before']:.1f} before / {r['load_after']:.1f} after")
    print(f"\nWordPiece {r['vocab_size']:,} on People's Daily train: {r['train_seconds']:.2f} s; validation: "
          f"unknown-token rate {cov['unknown_token_rate']:.4%}, {cov['tokens_per_char']:.3f} tokens/char, "
          f"{cov['tokens']:,} tokens")
    plain = r["plain_encode_batch"]
    print(f"\n| tokenization (all splits, {plain['tokens']:,} tokens) | seconds | tokens/s | MB/s of text | vs plain encode_batch |")
    print("|---|---:|---:|---:|---:|")
    print(f"| plain `encode_batch` loop, texts in memory | {plain['seconds']:.2f} | {plain['tokens_per_s']:,.0f} | {plain['mb_per_s']:.2f} | 1.00 |")
    for workers in (1, 2):
        row = r[f"data_tokenize_workers_{workers}"]
        print(f"| `lmforge data tokenize --workers {workers}` | {row['seconds']:.2f} | {row['tokens_per_s']:,.0f} | "
              f"{row['mb_per_s']:.2f} | {row['tokens_per_s'] / plain['tokens_per_s']:.2f} |")
    step = r["train_step_seconds"]
    print(f"\nTraining step it must feed (TransformerEncoder 4x256, seq {SEQ}, batch {BATCH}): {step * 1000:.0f} ms "
          f"= {1 / step:.2f} batches/s")
    print("\n| reader (seq 128, batch 32) | batches/s | ms/batch | loader time / step time |")
    print("|---|---:|---:|---:|")
    for name, row in r["readers"].items():
        rate = row["batches_per_s"]
        print(f"| {name} | {rate:,.0f} | {1000 / rate:.2f} | {1 / rate / step:.4f} |")


if __name__ == "__main__":
    main()
