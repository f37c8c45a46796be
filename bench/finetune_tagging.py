"""Word segmentation (BMES) and NER (BIO person/place/organisation) span F1 on the People's Daily test
splits, a fine-tuned lmforge model next to the majority-tag and jieba baselines.

    PYTHONPATH=. python bench/finetune_tagging.py --work /tmp/lmforge-ft-bench --init-from /tmp/lmforge-ft-bench/pretrained

``--init-from`` is a pretrained model dir (bench/finetune_reviews.py leaves one in WORK/pretrained).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="/tmp/lmforge-ft-bench")
    parser.add_argument("--init-from", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--method", default="full")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    from lmforge.data.prepare import make_prepare_config, prepare
    from lmforge.finetune.stage import finetune, make_finetune_config

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    max_length = json.loads((Path(args.init_from) / "config.json").read_text())["model"]["max_positions"]
    rows = []
    for task, corpus in (("segmentation", "peoples-daily-seg"), ("ner", "peoples-daily-pos")):
        data = work / corpus
        if not (data / "DONE").is_file():
            prepare(make_prepare_config({"input": {"paths": [f"corpus:{corpus}"]}, "out": str(data), "progress": False}))
        started = time.perf_counter()
        result = finetune(make_finetune_config({
            "out": str(work / f"ft-{task}"), "init_from": args.init_from, "task": "tagging", "method": args.method,
            "epochs": args.epochs, "data": {"path": str(data), "max_length": max_length},
            "train": {"batch_size": 32, "progress": False, "tensorboard": False, "peak_flops": 1e12, "log_every": 50,
                      "optim": {"lr": 1e-3 if args.method == "full" else 2e-3}, "schedule": {"warmup": 0.1}},
        }, source="bench"))
        seconds = time.perf_counter() - started
        for r in result["report"]["rows"]:
            m = r["metrics"]
            rows.append({"task": task, "system": r["name"], "precision": m["precision"], "recall": m["recall"],
                         "f1": m["f1"], "seconds": round(seconds, 1) if r["kind"] == "model" else None})
            print(rows[-1], flush=True)
    (work / "tagging-results.json").write_text(json.dumps(rows, indent=1))
    print("| task | system | span P | span R | span F1 | time |\n|---|---|---|---|---|---|")
    for r in rows:
        t = f"{r['seconds']:.0f} s" if r["seconds"] else "-"
        print(f"| {r['task']} | {r['system']} | {100 * r['precision']:.2f}% | {100 * r['recall']:.2f}% "
              f"| {100 * r['f1']:.2f}% | {t} |")


if __name__ == "__main__":
    main()
