"""Peak memory per rank: train.parallel=fsdp (FSDP2) against ddp, 2 gloo processes on this machine.

Models whose parameters and AdamW state dominate their memory (blocks of 512, FFN 2,048; short
sequences, so activations are small), trained for a few steps on generated tokens (memory depends on
shapes, not on what the tokens say): 8 blocks at BERT's vocabulary of 30,522 (41M parameters, 38% of
them the tied embedding, which sits in the root group and so is gathered through the whole step), and
16 blocks at a vocabulary of 8,000 (55M, 7% embedding). Each rank reports its peak resident set
(ru_maxrss), its resident set just before the model is built (the model's share is the difference) and
the wall time of its training loop. The two modes run in turns, `--repeats` times each.

Usage: PYTHONPATH=. python bench/fsdp_memory.py [--repeats 2] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
MODEL = dict(max_positions=64, d_model=512, n_heads=8, d_ff=2048, dropout=0.0, attn_dropout=0.0)
SHAPES = {"8 x 512, vocab 30,522": dict(n_layers=8, vocab_size=30522),
          "16 x 512, vocab 8,000": dict(n_layers=16, vocab_size=8000)}
STEPS, SEQ, BATCH = 4, 32, 2  # per rank


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(parallel: str, shape: str, out: Path) -> None:
    from lmforge.config import build_config
    from lmforge.model.heads import LanguageModel
    from lmforge.model.transformer import TransformerConfig
    from lmforge.train.config import TrainConfig
    from lmforge.train.data import TensorBlockSource
    from lmforge.train.distributed import init_distributed, shutdown
    from lmforge.train.loop import train_loop
    from lmforge.train.objectives import causal_lm_objective

    info = init_distributed(torch.device("cpu"))
    before = _rss_mb()
    torch.manual_seed(0)
    dims = {**MODEL, **SHAPES[shape]}
    model = LanguageModel(TransformerConfig(**dims, causal=True, norm="pre", type_vocab_size=0), heads=("lm",))
    params = sum(p.numel() for p in model.parameters())
    tokens = torch.randint(5, dims["vocab_size"], (SEQ * BATCH * info.world_size * (STEPS + 1),))
    data = TensorBlockSource(tokens, SEQ, BATCH, rank=info.rank, world_size=info.world_size)
    cfg = build_config(TrainConfig, {"steps": STEPS, "batch_size": BATCH, "precision": "fp32", "threads": 1,
                                     "progress": False, "tensorboard": False, "peak_flops": 1e12,
                                     "parallel": parallel}, source="bench")
    start = time.perf_counter()
    train_loop(model, causal_lm_objective, data, cfg, device=torch.device("cpu"), info=info)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    (out / f"rank{info.rank}.json").write_text(json.dumps({"before_mb": before, "peak_mb": peak, "params": params,
                                                          "seconds": seconds}))
    shutdown(info)


def launch(parallel: str, shape: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(__file__).resolve()), "--worker", parallel, shape, tmp]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{parallel} run failed:\n{proc.stderr[-4000:]}")
        return [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in (0, 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", nargs=3, metavar=("PARALLEL", "SHAPE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], Path(args.worker[2]))
        return
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, 2 gloo processes, "
          f"1 thread each; model {MODEL}, {STEPS} steps of {BATCH} x {SEQ} per rank, fp32, AdamW")
    results: dict[str, Any] = {"capability": torch.backends.cpu.get_cpu_capability(), "shapes": {}}
    print(f"{'model':24} {'mode':5} {'peak RSS/rank MB':>17} {'above start MB':>15} {'loop s':>7}")
    for shape in SHAPES:
        runs: dict[str, list[dict[str, float]]] = {"ddp": [], "fsdp": []}
        for _ in range(args.repeats):
            for parallel in runs:  # in turns, so a change in the machine's load meets both
                ranks = launch(parallel, shape)
                runs[parallel].append({"peak_mb": max(r["peak_mb"] for r in ranks),
                                       "model_mb": max(r["peak_mb"] - r["before_mb"] for r in ranks),
                                       "seconds": max(r["seconds"] for r in ranks), "params": ranks[0]["params"]})
        table = {p: {k: statistics.median(r[k] for r in rows) for k in ("peak_mb", "model_mb", "seconds", "params")}
                 for p, rows in runs.items()}
        for parallel, row in table.items():
            print(f"{shape:24} {parallel:5} {row['peak_mb']:17.0f} {row['model_mb']:15.0f} {row['seconds']:7.1f}")
        ratio = {k: table["fsdp"][k] / table["ddp"][k] for k in ("peak_mb", "model_mb", "seconds")}
        print(f"{shape:24} fsdp/ddp: {ratio['peak_mb']:.2f}x peak, {ratio['model_mb']:.2f}x above the start, "
              f"{ratio['seconds']:.2f}x time ({table['ddp']['params'] * 4 / 2**20:.0f} MB of fp32 parameters)")
        results["shapes"][shape] = {"runs": runs, "median": table, "ratio": ratio}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
