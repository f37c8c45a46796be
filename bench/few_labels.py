"""Few labels on the review task: fine-tuning a pretrained encoder on 32 / 128 / 512 labelled reviews
with a classification head and prompt-based through its MLM head (a template and label words), each alone
and with self-training on the rest of the train split's texts (labels ignored), next to TF-IDF on the
same subset; several seeds (each seed a different subset and training order). Test accuracy on the
whole leak-free test split.

    python bench/few_labels.py --pretrained qs/pretrain --data qs/sentiment --work DIR [--sizes 32 128 512] [--seeds 0 1 2]

PRETRAINED/DATA: an MLM-pretrained lmforge encoder and the prepared reviews (`lmforge quickstart --out qs`).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from lmforge.finetune.stage import finetune, make_finetune_config


def run(args: argparse.Namespace, size: int, seed: int, self_training: bool, prompt: bool) -> dict[str, float]:
    out = args.work / f"n{size}-seed{seed}-{'prompt-' if prompt else ''}{'st' if self_training else 'ft'}"
    how = {"prompt": {"template": args.template, "verbalizer": json.loads(args.words)}} if prompt else {"pooling": "mean"}
    report = finetune(make_finetune_config({
        "out": str(out), "init_from": str(args.pretrained), "epochs": args.epochs, **how,
        "dropout": 0.1, "data": {"path": str(args.data), "max_length": 128, "max_train_examples": size,
                                 "subset_seed": seed},
        "self_training": {"unlabelled": str(args.data), "threshold": args.threshold} if self_training else {},
        "report": {"baselines": not (self_training or prompt)},
        "train": {"batch_size": 16, "seed": seed, "progress": False, "optim": {"lr": args.prompt_lr if prompt else args.lr},
                  "budget": args.budget,
                  "early_stopping": {"patience": None}}}, source="bench"))["report"]
    return {r["name"]: r["metrics"]["accuracy"] for r in report["rows"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrained", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-4, help="peak learning rate of the classification-head runs")
    ap.add_argument("--prompt-lr", type=float, default=1e-4, help="peak learning rate of the prompt-based runs")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--template", default="{text}总之很[MASK]。", help="prompt.template of the prompt-based runs")
    ap.add_argument("--words", default='{"positive": "好", "negative": "差"}', help="prompt.verbalizer (JSON)")
    ap.add_argument("--budget", default="45s", help="time cap of each fine-tuning (a self-training round's "
                                                    "pseudo-labelled set is large)")
    args = ap.parse_args()
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
    for size in args.sizes:
        ft, st, pt, pst, tfidf = [], [], [], [], []
        for seed in args.seeds:
            plain = run(args, size, seed, False, False)
            ft.append(plain["lmforge full"])
            tfidf.append(plain["tfidf-logreg"])
            st.append(run(args, size, seed, True, False)["lmforge full"])
            pt.append(run(args, size, seed, False, True)["lmforge full"])
            pst.append(run(args, size, seed, True, True)["lmforge full"])
        show = lambda xs: f"{100 * statistics.mean(xs):.1f} ({', '.join(f'{100 * x:.1f}' for x in xs)})"  # noqa: E731
        print(f"{size:>4} labels: fine-tuning {show(ft)}; + self-training {show(st)}; prompt-based {show(pt)}; "
              f"+ self-training {show(pst)}; TF-IDF {show(tfidf)}", flush=True)


if __name__ == "__main__":
    main()
