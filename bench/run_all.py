"""Rerun every benchmark and rewrite the results page (docs/benchmarks.md).

Each benchmark runs as its own process (one at a time, so they do not measure each other), its
output is kept in bench/results/NAME.log, and the page gets, per benchmark, the exact command, its
wall time and exit status, and the tables and summary lines it printed. Hardware and library
versions head the page. A benchmark that fails is reported as failed on the page; the others still run.

    PYTHONPATH=. python bench/run_all.py                 # everything (about an hour on 2 CPU cores)
    PYTHONPATH=. python bench/run_all.py --quick         # small sizes: checks that every benchmark runs
    PYTHONPATH=. python bench/run_all.py --only dedup tokenize
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    args: tuple[str, ...]  # after `python bench/<script>`
    quick: tuple[str, ...]  # the same, at smoke-test sizes
    script: str
    details: str  # the docs page with the discussion, or ""


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("dedup", "Near-duplicate detection vs datasketch", (),
              ("--base", "1000", "--variants", "1000", "--repeats", "1", "--out", "bench/results/benchmarks-dedup.md"),
              "dedup_vs_datasketch.py", "benchmarks-dedup.md"),
    Benchmark("tokenize", "Tokenizer training, tokenizing and shard reading", ("--repeats", "3"), ("--repeats", "1"),
              "tokenize_bench.py", "benchmarks-tokenize.md"),
    Benchmark("pretrain", "Pretraining throughput and time-to-quality vs the Hugging Face Trainer",
              ("--repeats", "2", "--ttq-minutes", "10"),
              ("--repeats", "1", "--steps", "4", "--warmup", "1", "--sentences", "2000", "--ttq-minutes", "0"),
              "pretrain_vs_hf.py", "benchmarks-pretrain.md"),
    Benchmark("finetune", "Review sentiment: pretrained vs no pretraining vs LoRA vs baselines",
              ("--work", "bench/results/finetune-work"),
              ("--work", "bench/results/finetune-quick", "--pretrain-budget", "20", "--epochs", "1", "--d-model", "32",
               "--layers", "1"),
              "finetune_reviews.py", "finetuning.md"),
    Benchmark("curve", "A 10-minute People's Daily pretraining run, killed and resumed",
              ("--minutes", "10", "--kill-after", "6", "--out", "bench/results/pd-curve"),
              ("--minutes", "1", "--kill-after", "0.5", "--out", "bench/results/pd-curve-quick"),
              "pretrain_curve.py", "benchmarks-pretrain.md"),
    Benchmark("tagging", "Word segmentation and NER (span F1) from the finetune benchmark's pretrained model",
              ("--work", "bench/results/finetune-work", "--init-from", "bench/results/finetune-work/pretrained"),
              ("--work", "bench/results/finetune-quick", "--init-from", "bench/results/finetune-quick/pretrained"),
              "finetune_tagging.py", "finetuning.md"),
    Benchmark("serve", "Inference backends and the HTTP server", ("--repeats", "5"),
              ("--train", "200", "--eval", "64", "--repeats", "1", "--requests", "64", "--clients", "8"),
              "serve_bench.py", "serving.md"),
)


@dataclass
class Outcome:
    bench: Benchmark
    command: str
    seconds: float
    returncode: int
    output: str


def run(bench: Benchmark, quick: bool, results: Path, python: str = sys.executable) -> Outcome:
    argv = [python, str(ROOT / "bench" / bench.script), *(bench.quick if quick else bench.args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - started
    (results / f"{bench.name}.log").write_text(proc.stdout, encoding="utf-8")
    command = "PYTHONPATH=. python " + " ".join(["bench/" + bench.script, *argv[2:]])
    return Outcome(bench, command, seconds, proc.returncode, proc.stdout)


def summary_lines(output: str) -> list[str]:
    """What a reader needs from a benchmark's output: its Markdown tables and the lines that state a
    result (ratios, targets, speed-ups), not its progress chatter."""
    words = ("ratio", "target", "speed", "tokens/s", "req/s", "accuracy", "loss")
    keep = []
    for line in output.splitlines():
        text = line.rstrip()
        stated = any(w in text.lower() for w in words) or re.search(r"\d\.?\d*x\b", text)
        if text.startswith("|") or (stated and len(text) < 400):
            keep.append(text)
    return keep


def environment() -> list[str]:
    import torch

    versions = [f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    for name in ("tokenizers", "transformers", "onnxruntime", "datasketch", "sklearn"):
        try:
            module = __import__(name)
            versions.append(f"{name} {module.__version__}")
        except ImportError:
            pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return [f"- CPU: {cpu}, {os.cpu_count()} cores; GPU: {gpu}; load average at start: {load}",
            f"- {', '.join(versions)}"]


def render(outcomes: Sequence[Outcome], quick: bool, env: list[str], date: Optional[str] = None) -> str:
    date = date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Benchmark results", "",
             f"Written by `bench/run_all.py{' --quick' if quick else ''}` on {date}; do not edit by hand, rerun it.",
             "Every number is measured side by side in one run on the machine below; the pages named under each",
             "benchmark discuss the results and the targets.", "", *env, ""]
    if quick:
        lines += ["**Quick mode: smoke-test sizes, not results.**", ""]
    for o in outcomes:
        status = "ok" if o.returncode == 0 else f"**failed (exit {o.returncode})**, see bench/results/{o.bench.name}.log"
        lines += [f"## {o.bench.title}", "", "```", o.command, "```",
                  f"{o.seconds / 60:.1f} min, {status}." + (f" Discussion: [{o.bench.details}]({o.bench.details})."
                                                             if o.bench.details else ""), ""]
        body = summary_lines(o.output) if o.returncode == 0 else o.output.splitlines()[-15:]
        if o.returncode != 0:
            body = ["```", *body, "```"]
        lines += [*body, ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes (minutes), not results")
    ap.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS], help="run these benchmarks only")
    ap.add_argument("--page", default=str(ROOT / "docs" / "benchmarks.md"), help="the page to rewrite")
    args = ap.parse_args(argv)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    env = environment()
    outcomes = []
    for bench in BENCHMARKS:
        if args.only and bench.name not in args.only:
            continue
        print(f"== {bench.name}: {bench.title}", flush=True)
        outcomes.append(run(bench, args.quick, results))
        print(f"   {outcomes[-1].seconds:.0f} s, exit {outcomes[-1].returncode}", flush=True)
    Path(args.page).write_text(render(outcomes, args.quick, env), encoding="utf-8")
    print(f"wrote {args.page}")
    return 0 if all(o.returncode == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
