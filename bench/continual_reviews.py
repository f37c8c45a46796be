"""Forgetting, measured: a review-sentiment classifier (task 1) fine-tuned on a second task (People's Daily
sentences: does it name a person? from the corpus's gold `nr` tags), class-incremental (one head over the
four labels), without and with rehearsal and EWC; task 1's test accuracy before and after each, and task 2's.

    python bench/continual_reviews.py --model qs/finetune --data qs/sentiment --work DIR [--budget 90s]

MODEL/DATA: a fine-tuned review classifier and its prepared data (`lmforge quickstart --out qs` makes both).
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from lmforge.corpora import get_corpus
from lmforge.data.prepare import make_prepare_config, prepare
from lmforge.eval.scoring import model_rows
from lmforge.finetune.stage import finetune, make_finetune_config

def variants(sizes: list[int], ewc: float) -> dict[str, dict]:
    """name -> continual.* settings: the head covers all four labels in every one."""
    out: dict[str, dict] = {"plain fine-tuning": {"rehearsal_size": 0}}  # nothing replayed
    out.update({f"rehearsal {n}": {"rehearsal_size": n} for n in sizes})
    out[f"EWC (lambda {ewc:g}), no replay"] = {"rehearsal_size": 0, "ewc": ewc}
    out[f"rehearsal {sizes[0]} + EWC"] = {"rehearsal_size": sizes[0], "ewc": ewc}
    return out


def person_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    rows = [{"text": r.text, "label": "person" if "nr" in r.fields["pos"] else "no_person"}
            for r in get_corpus("peoples-daily-pos").records() if r.text and 8 <= len(r.text) <= 120]
    random.Random(seed).shuffle(rows)
    return rows[:n]


def accuracy(model: Path, data: Path) -> float:
    return model_rows([str(model)], str(data), "test")[0]["metrics"]["accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--sentences", type=int, default=5000)
    ap.add_argument("--budget", default="90s")
    ap.add_argument("--rehearsal-sizes", dest="sizes", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--ewc", type=float, default=1e4)
    ap.add_argument("--only", nargs="*", help="run only these variants (names as printed)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
    raw = args.work / "persons.jsonl"
    task2 = args.work / "persons"
    if not (task2 / "DONE").is_file():
        raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in person_rows(args.sentences)),
                       encoding="utf-8")
        prepare(make_prepare_config({"input": {"paths": [str(raw)], "label_field": "label"}, "out": str(task2),
                                     "progress": False}, source="bench"))
    before = accuracy(args.model, args.data)
    print(f"{'before (task 1 model)':<32} task 1 {before:.4f}")
    for name, settings in variants(args.sizes, args.ewc).items():
        if args.only and name not in args.only:
            continue
        out = args.work / name.replace(" ", "-").replace("(", "").replace(")", "").replace(",", "")
        continual = {"rehearsal": str(args.data), **settings}
        finetune(make_finetune_config({
            "out": str(out), "init_from": str(args.model), "epochs": 20, "data": {"path": str(task2)},
            "continual": continual, "report": {"baselines": False},
            "train": {"budget": args.budget, "batch_size": 32, "progress": False, "optim": {"lr": 1e-4}}},
            source="bench"))
        first, second = accuracy(out, args.data), accuracy(out, task2)
        print(f"{name:<32} task 1 {first:.4f} ({100 * (first - before):+.1f} points), task 2 {second:.4f}")


if __name__ == "__main__":
    main()
