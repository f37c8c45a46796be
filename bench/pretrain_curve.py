"""A 10-minute CPU pretraining run on People's Daily, killed part-way and resumed with resume=auto.

    PYTHONPATH=. python bench/pretrain_curve.py --minutes 10 --kill-after 6 --out runs/pd-curve

Shows the validation MLM loss and accuracy improving, and that the resumed run continues the same
curve. Uses in-memory sources (lmforge.train.data) over WordPiece ids of the built-in corpus, so it
runs without the tokenizer/shards stage; the run itself is the real `pretrain()` stage function.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import subprocess
import sys
from pathlib import Path

import torch

from lmforge.config import load_config_file
from lmforge.corpora import get_corpus
from lmforge.train.data import TensorBlockSource
from lmforge.train.pretrain import make_pretrain_config, pretrain

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tokens(work: Path, vocab_size: int = 8000) -> dict:
    """Tokenize once and keep ids on disk, so the resumed process sees the very same ids."""
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    if (work / "ids.safetensors").is_file():
        return {**json.loads((work / "meta.json").read_text()), **load_file(str(work / "ids.safetensors"))}
    texts = [r.text for r in get_corpus("peoples-daily").records() if r.text]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    )
    sep = tok.token_to_id("[SEP]")
    ids = list(itertools.chain.from_iterable(e.ids + [sep] for e in tok.encode_batch(texts)))
    cut = int(len(ids) * 0.97)
    work.mkdir(parents=True, exist_ok=True)
    tok.save(str(work / "tokenizer.json"))
    save_file(
        {"train": torch.tensor(ids[:cut]), "val": torch.tensor(ids[cut:])}, str(work / "ids.safetensors")
    )
    ids_map = {s: tok.token_to_id(s) for s in SPECIALS}
    meta = {
        "tokenizer": {
            "vocab_size": tok.get_vocab_size(),
            "kind": "wordpiece",
            "hash": "bench",
            "special_tokens": {
                "pad": ids_map["[PAD]"],
                "unk": ids_map["[UNK]"],
                "cls": ids_map["[CLS]"],
                "sep": sep,
                "mask": ids_map["[MASK]"],
                "eos": None,
            },
        }
    }
    (work / "meta.json").write_text(json.dumps({"meta": meta}))
    return tokens(work)


def child(out: Path, minutes: float) -> None:
    data = tokens(out / "data")
    config = make_pretrain_config(
        load_config_file("configs/pretrain-tiny.yaml"),
        {
            "out": str(out / "run"),
            "resume": "auto",
            "train": {
                "budget": minutes * 60,
                "steps": 100_000,
                "eval_every": 25,
                "eval_batches": 8,
                "checkpoint_every": 25,
                "log_every": 5,
                "optim": {"lr": 2e-3},
            },
        },
        source="bench",
    )
    cls = data["meta"]["tokenizer"]["special_tokens"]["cls"]
    train = TensorBlockSource(data["train"], 128, 32, prefix_id=cls)
    val = TensorBlockSource(data["val"], 128, 32, shuffle=False, prefix_id=cls)
    pretrain(
        config,
        train_data=train,
        eval_data=val,
        meta=data["meta"],
        tokenizer_file=out / "data" / "tokenizer.json",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument(
        "--kill-after", type=float, default=6.0, help="minutes before the first process is killed"
    )
    ap.add_argument("--out", default="runs/pd-curve")
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    if args.child:
        return child(out, args.minutes)
    tokens(out / "data")
    cmd = [sys.executable, __file__, "--child", "--minutes", str(args.minutes), "--out", str(out)]
    first = subprocess.Popen(cmd)
    try:
        first.wait(timeout=args.kill_after * 60)
    except subprocess.TimeoutExpired:
        first.send_signal(signal.SIGKILL)
        first.wait()
    print(f"killed after {args.kill_after} min; resuming with resume=auto", flush=True)
    subprocess.run(cmd, check=True)
    evals = {}
    for line in (out / "run" / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "val_loss" in rec:
            evals[rec["step"]] = rec  # a step evaluated again after the resume keeps its newer record
    print("| step | val MLM loss | val MLM accuracy |\n|---:|---:|---:|")
    for step in sorted(evals):
        print(f"| {step} | {evals[step]['val_loss']:.4f} | {evals[step]['val_mlm_acc']:.4f} |")


if __name__ == "__main__":
    main()
