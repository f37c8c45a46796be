"""Rerun every benchmark and rewrite the results page (docs/benchmarks.md).

Each benchmark runs as its own process (one at a time, so they do not measure each other); its output
is kept in bench/results/NAME.log and its run (command, date, wall time, exit status, hardware and
versions) in bench/results/NAME.json. The page is then rebuilt from the latest recorded run of every
benchmark: per benchmark, the exact command, when and where it ran, its wall time and exit status, and
the tables and summary lines it printed. So `--only` reruns some benchmarks and the page keeps the
others' last results (each section dated); one that never ran is listed as such. A benchmark that
fails is reported as failed on the page; the others still run.

    PYTHONPATH=. python bench/run_all.py                 # everything (about two hours on 2 CPU cores)
    PYTHONPATH=. python bench/run_all.py --only dedup tokenize
    PYTHONPATH=. python bench/run_all.py --quick         # small sizes, kept apart in bench/results/quick/
    PYTHONPATH=. python bench/run_all.py --page-only     # rebuild the page from the recorded runs
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

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
    Benchmark("finetune_vs_hf", "Fine-tuning the real MiniLM vs the Hugging Face Trainer (WordNet glosses)",
              ("--repeats", "2", "--per-class", "1500", "--threads", "1"),
              ("--repeats", "1", "--per-class", "60", "--threads", "1", "--warmup", "1",
               "--out", "bench/results/quick/finetune_vs_hf.json"),
              "finetune_vs_hf.py", "benchmarks-finetune.md"),
    Benchmark("curve", "A 10-minute People's Daily pretraining run, killed and resumed",
              ("--minutes", "10", "--kill-after", "6", "--out", "bench/results/pd-curve"),
              ("--minutes", "1", "--kill-after", "0.5", "--out", "bench/results/pd-curve-quick"),
              "pretrain_curve.py", "benchmarks-pretrain.md"),
    Benchmark("tagging", "Word segmentation and NER (span F1) from the finetune benchmark's pretrained model",
              ("--work", "bench/results/finetune-work", "--init-from", "bench/results/finetune-work/pretrained"),
              ("--work", "bench/results/finetune-quick", "--init-from", "bench/results/finetune-quick/pretrained"),
              "finetune_tagging.py", "finetuning.md"),
    Benchmark("serve", "Inference backends and the HTTP server, on the finetune benchmark's sentiment model",
              ("--model", "bench/results/finetune-work/ft-full", "--repeats", "5"),
              ("--model", "bench/results/finetune-quick/ft-full", "--eval", "64", "--repeats", "1", "--requests", "64",
               "--clients", "8"),
              "serve_bench.py", "serving.md"),
)


@dataclass
class Outcome:
    bench: Benchmark
    command: str
    seconds: float
    returncode: int
    output: str
    date: str = ""
    environment: tuple[str, ...] = ()


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run(bench: Benchmark, quick: bool, results: Path, python: str = sys.executable) -> Outcome:
    """Run one benchmark; keep its output (NAME.log) and the facts of the run (NAME.json) in ``results``."""
    argv = [python, str(ROOT / "bench" / bench.script), *(bench.quick if quick else bench.args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    machine, date = tuple(environment()), now()
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - started
    command = "PYTHONPATH=. python " + " ".join(["bench/" + bench.script, *argv[2:]])
    outcome = Outcome(bench, command, seconds, proc.returncode, proc.stdout, date, machine)
    (results / f"{bench.name}.log").write_text(proc.stdout, encoding="utf-8")
    record = {"command": command, "seconds": seconds, "returncode": proc.returncode, "date": date,
              "environment": list(machine)}
    (results / f"{bench.name}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return outcome


def recorded(bench: Benchmark, results: Path) -> Optional[Outcome]:
    """The latest recorded run of ``bench`` in ``results``, or None if it never ran there."""
    meta, log = results / f"{bench.name}.json", results / f"{bench.name}.log"
    if not (meta.is_file() and log.is_file()):
        return None
    try:
        record: dict[str, Any] = json.loads(meta.read_text(encoding="utf-8"))
        return Outcome(bench, record["command"], record["seconds"], record["returncode"],
                       log.read_text(encoding="utf-8"), record["date"], tuple(record["environment"]))
    except (ValueError, KeyError, TypeError) as exc:  # an unreadable record reads as "never ran", not a crash
        print(f"   ignoring {meta}: {exc!r}", file=sys.stderr)
        return None


def summary_lines(output: str) -> list[str]:
    """What a reader needs from a benchmark's output: its Markdown tables and the lines that state a
    result (ratios, targets, speed-ups), not its progress chatter."""
    words = ("ratio", "target", "speed", "tokens/s", "req/s", "accuracy", "loss")
    keep = []
    for line in output.splitlines():
        text = line.rstrip()
        stated = any(w in text.lower() for w in words) or re.search(r"\d\.?\d*x\b", text)
        # rich boxes, Python reprs and pretty-printed JSON (members indented) repeat what the tables say
        if text.startswith("│") or text.lstrip().startswith(("{", "[", "}", "]", '"')):
            continue
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
    from lmforge.train.hardware import cpu_has_native_bf16

    isa = (f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
           f"bf16 {'native' if cpu_has_native_bf16() else 'emulated'}")
    limits = [f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(k)]
    if limits:
        isa += f" (limited by {' '.join(limits)})"
    return [f"- CPU: {cpu}, {os.cpu_count()} cores, {isa}; GPU: {gpu}; load average at start: {load}",
            f"- {', '.join(versions)}"]


def render(benchmarks: Sequence[Benchmark], outcomes: dict[str, Outcome], quick: bool,
           date: Optional[str] = None) -> str:
    """The results page: one section per benchmark, from its latest run (or a note that it never ran)."""
    lines = ["# Benchmark results", "",
             f"Written by `bench/run_all.py{' --quick' if quick else ''}` on {date or now()}; do not edit by hand,"
             " rerun it.",
             "Every number in a section was measured side by side in that one run, on the machine named there;",
             "the pages named under each benchmark discuss the results and the targets.", ""]
    if quick:
        lines += ["**Quick mode: smoke-test sizes, not results.**", ""]
    for bench in benchmarks:
        lines += [f"## {bench.title}", ""]
        o = outcomes.get(bench.name)
        if o is None:
            earlier = f" Earlier results, each with its command: [{bench.details}]({bench.details})." if bench.details else ""
            lines += [f"Not run yet: `PYTHONPATH=. python bench/run_all.py --only {bench.name}`.{earlier}", ""]
            continue
        status = "ok" if o.returncode == 0 else f"**failed (exit {o.returncode})**, see bench/results/{bench.name}.log"
        lines += ["```", o.command, "```",
                  f"Run {o.date}, {o.seconds / 60:.1f} min, {status}."
                  + (f" Discussion: [{bench.details}]({bench.details})." if bench.details else ""), "",
                  *o.environment, ""]
        body = summary_lines(o.output) if o.returncode == 0 else ["```", *o.output.splitlines()[-15:], "```"]
        lines += [*body, ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes (minutes), not results")
    ap.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS], help="run these benchmarks only")
    ap.add_argument("--page-only", action="store_true", help="run nothing: rebuild the page from the recorded runs")
    ap.add_argument("--page", help="the page to rewrite (default docs/benchmarks.md; bench/results/quick/"
                                   "benchmarks.md with --quick)")
    args = ap.parse_args(argv)
    results = ROOT / "bench" / "results" / ("quick" if args.quick else "")
    results.mkdir(parents=True, exist_ok=True)
    page = Path(args.page) if args.page else (results / "benchmarks.md" if args.quick else ROOT / "docs" / "benchmarks.md")
    failed = False
    for bench in BENCHMARKS:
        if args.page_only or (args.only and bench.name not in args.only):
            continue
        print(f"== {bench.name}: {bench.title}", flush=True)
        outcome = run(bench, args.quick, results)
        failed |= outcome.returncode != 0
        print(f"   {outcome.seconds:.0f} s, exit {outcome.returncode}", flush=True)
    outcomes = {b.name: o for b in BENCHMARKS if (o := recorded(b, results)) is not None}
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(render(BENCHMARKS, outcomes, args.quick), encoding="utf-8")
    print(f"wrote {page}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
