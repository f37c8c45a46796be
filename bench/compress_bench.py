"""Latency and accuracy of a compressed classifier against the one it came from, side by side.

    python bench/compress_bench.py --original DIR --compressed DIR [DIR ...] --data DATA [--repeats 7]

Each model directory is measured as fp32 eager and as an ONNX Runtime int8 graph (`export --to onnx-int8`),
one thread, batch 1 and batch 32, in interleaved rounds (bench/serve_bench.measure_backends) so machine
noise hits every variant alike; accuracy is on DATA's whole test split. Speed-ups are reported against the
original fp32, with the issue's targets: >= 2x without int8 and >= 4x with it, at <= 1 point of accuracy.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

import lmforge
from lmforge.serve.export import export_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import measure_backends


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", type=Path, required=True)
    ap.add_argument("--compressed", type=Path, nargs="+", required=True)
    ap.add_argument("--data", type=Path, required=True, help="a `lmforge data prepare` directory (test split)")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    test = [json.loads(line) for line in (args.data / "test.jsonl").read_text().splitlines() if line.strip()]
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, 1 thread, "
          f"{len(test)} test examples")
    with tempfile.TemporaryDirectory() as work:
        preds = {}
        for i, d in enumerate([args.original, *args.compressed]):
            name = "original" if i == 0 else f"{d.name}"
            preds[f"{name} fp32"] = lmforge.load(d)
            preds[f"{name} int8"] = lmforge.load(export_model(d, "onnx-int8", Path(work) / f"{i}-int8"))
        res = measure_backends(preds, test, args.repeats)
    base = res["original fp32"]
    print(f"{'variant':<28} {'b1 ms':>8} {'b32 ms':>8} {'x b1':>6} {'x b32':>6} {'accuracy':>9} {'target':>7}")
    for name, r in res.items():
        x1, x32 = base["batch1_ms"] / r["batch1_ms"], base["batch32_ms"] / r["batch32_ms"]
        need = 4.0 if name.endswith("int8") else 2.0
        met = min(x1, x32) >= need and r["accuracy"] >= base["accuracy"] - 0.01
        print(f"{name:<28} {r['batch1_ms']:8.2f} {r['batch32_ms']:8.1f} {x1:6.2f} {x32:6.2f} "
              f"{r['accuracy']:9.4f} {('met' if met else 'not met') if name != 'original fp32' else '':>7}")


if __name__ == "__main__":
    main()
