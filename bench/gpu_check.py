"""One prepared check of lmforge's CUDA code paths, for a session that is lent a GPU once.

    PYTHONPATH=. python -u bench/gpu_check.py [--out bench/results/gpu_check] [--budget 295] [--only NAME ...]
    PYTHONPATH=. python bench/gpu_check.py --dry-run     # the plan: sections, time boxes, configs

No lmforge CUDA path had run before this script: autocast on CUDA, fp16 with GradScaler, fused AdamW on
CUDA parameters, torch.compile with inductor, `--device cuda` end to end. The sections, in order (see
``plan()`` for each one's time box and configuration):

1. environment: torch, CUDA, GPU, compute capability, bf16 support, memory, the CPU's vector capability,
   and the matmul peak lmforge's loop would measure for MFU next to the datasheet figure;
2. tests: `pytest -m device --lmforge-device cuda` (the model and training tests written for any device);
3. pretrain_gpt2 / pretrain_bert: GPT-2-124M- and BERT-base-shaped models through lmforge's train_loop
   in bf16 with the AdamW lmforge picks (fused on CUDA): tokens/s after warmup, MFU, peak memory;
4. compile: train.compile (inductor) on vs off on one model: tokens/s and compile time;
5. fp16: a few steps with loss scaling; losses finite, the GradScaler's scale from the checkpoint;
6. quickstart: `lmforge quickstart --device cuda` at a small --minutes: wall clock and test accuracy;
7. serve: requests/s of `lmforge serve` with micro-batching off and on, 32 loopback clients, on the
   quickstart's fine-tuned model.

Every section runs under a time box (SIGALRM; subprocesses are killed with it); one that fails or runs
over is recorded (exception type, first line, where) with what it measured so far, and the next one
runs. Results go to OUT/gpu_check.json (rewritten after every section, so a killed run keeps what it
finished) and the progress to OUT/gpu_check.log. Without a CUDA GPU the script says so, writes a JSON
with status "skipped" and exits 0. Not part of bench/run_all.py: CI machines have no GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import io
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, TextIO

import torch

from lmforge.train.hardware import matmul_rate

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "gpu_check"
# under 5 minutes in all, so a 10-minute remote command has room for one rerun of a failed section
DEFAULT_BUDGET_S = 295.0

# Dense (no sparsity) peak FLOP/s from NVIDIA's datasheets, in TFLOP/s; fp32 is plain FP32, not TF32.
# Matched as whole words of torch.cuda.get_device_name(), first match wins, so specific names go first.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("B200", {"bf16": 2250.0, "fp16": 2250.0}),
    ("H200 NVL", {"bf16": 835.0, "fp16": 835.0, "fp32": 60.0}),
    ("H200", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}),
    ("H100 NVL", {"bf16": 835.0, "fp16": 835.0, "fp32": 60.0}),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "fp32": 51.0}),
    ("H100", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}),  # SXM
    ("A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.0, "fp16": 362.0, "fp32": 91.6}),
    ("L40", {"bf16": 181.0, "fp16": 181.0, "fp32": 90.5}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3}),
    ("A10", {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2}),
    ("RTX 4090", {"bf16": 165.2, "fp16": 165.2, "fp32": 82.6}),
    ("V100", {"fp16": 125.0, "fp32": 15.7}),  # no bf16 tensor cores
    ("T4", {"fp16": 65.0, "fp32": 8.1}),
)

GPT2_124M = {
    "vocab_size": 50257,
    "max_positions": 1024,
    "n_layers": 12,
    "d_model": 768,
    "n_heads": 12,
    "d_ff": 3072,
    "causal": True,
    "norm": "pre",
    "activation": "gelu_tanh",
    "type_vocab_size": 0,
    "dropout": 0.0,
    "attn_dropout": 0.0,
    "norm_eps": 1e-5,
}
BERT_BASE = {
    "vocab_size": 30522,
    "max_positions": 512,
    "n_layers": 12,
    "d_model": 768,
    "n_heads": 12,
    "d_ff": 3072,
    "causal": False,
    "norm": "post",
    "activation": "gelu",
    "type_vocab_size": 2,
}
# GPT-2's width and sequence at 4 layers: inductor's compile time grows with depth, and the comparison
# needs only the same model both ways
GPT2_4_LAYERS = {**GPT2_124M, "n_layers": 4}


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    box_s: float  # the time box: the section is stopped when it runs longer
    config: dict[str, Any] = field(default_factory=dict)


def plan() -> list[Section]:
    """What the script runs, in order, with each section's time box (sum: under DEFAULT_BUDGET_S)."""
    return [
        Section(
            "environment",
            "torch, CUDA, GPU and CPU capabilities; matmul peaks",
            15,  # the first CUDA call creates the context: seconds on some machines
            {"matmul_sizes": [1024, 8192]},
        ),
        Section(
            "tests", "pytest -m device --lmforge-device cuda", 40, {"paths": ["tests"], "marker": "device"}
        ),
        Section(
            "pretrain_gpt2",
            "GPT-2-124M-shaped decoder, causal LM, bf16, lmforge's AdamW",
            25,
            {
                "model": GPT2_124M,
                "objective": "clm",
                "seq_len": 1024,
                "batch_size": 16,
                "steps": 40,
                "warmup": 10,
                "precision": "bf16",
            },
        ),
        Section(
            "pretrain_bert",
            "BERT-base-shaped encoder, MLM 15%, bf16, lmforge's AdamW",
            20,
            {
                "model": BERT_BASE,
                "objective": "mlm",
                "seq_len": 512,
                "batch_size": 32,
                "steps": 40,
                "warmup": 10,
                "precision": "bf16",
            },
        ),
        Section(
            "compile",
            "train.compile (inductor) on vs off, same model",
            40,
            {
                "model": GPT2_4_LAYERS,
                "objective": "clm",
                "seq_len": 1024,
                "batch_size": 16,
                "steps": 20,
                "warmup": 5,
                "precision": "bf16",
            },
        ),
        Section(
            "fp16",
            "fp16 autocast with loss scaling (GradScaler)",
            12,
            {
                "model": {**GPT2_4_LAYERS, "vocab_size": 8000, "max_positions": 512},
                "objective": "clm",
                "seq_len": 512,
                "batch_size": 8,
                "steps": 12,
                "warmup": 2,
                "precision": "fp16",
            },
        ),
        # its data, tokenizer, PPMI-SVD, baseline and report steps take about a minute besides training
        Section("quickstart", "lmforge quickstart --device cuda", 118, {"minutes": 0.5, "device": "cuda"}),
        Section(
            "serve",
            "lmforge serve: micro-batching off vs on, 32 concurrent loopback clients",
            20,
            {"clients": 32, "requests": 320, "threads": 0},
        ),
    ]


# ---------------------------------------------------------------- running sections


class SectionTimeout(Exception):
    """A section ran past its time box."""


@contextlib.contextmanager
def time_box(seconds: float) -> Iterator[None]:
    """Raise SectionTimeout in the main thread after ``seconds`` (Python code and subprocess waits are
    interrupted; a CUDA call blocked in C returns first)."""

    def on_alarm(signum: int, frame: Optional[FrameType]) -> None:
        raise SectionTimeout(f"ran past its time box of {seconds:.3g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def describe(exc: BaseException) -> dict[str, str]:
    """Type, first line, and where: the innermost frame, and the innermost one in this repository."""
    # a timeout's last frame is the alarm handler; where it struck is the frame before
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not (f.name == "on_alarm" and Path(f.filename).resolve() == Path(__file__).resolve())
    ]

    def at(frame: traceback.FrameSummary) -> str:
        path = Path(frame.filename)
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        return f"{shown}:{frame.lineno} in {frame.name}"

    ours = [f for f in frames if Path(f.filename).is_relative_to(ROOT) and "site-packages" not in f.filename]
    text = str(exc).strip().splitlines()
    return {
        "type": type(exc).__name__,
        "message": (text[0] if text else "")[:300],
        "where": at(frames[-1]) if frames else "",
        "in_repo": at(ours[-1]) if ours else "",
    }


@dataclass
class Context:
    """What sections share: the output directory, the log, and artifacts (the quickstart's run dir)."""

    out: Path
    log: Optional[TextIO] = None
    started: float = field(default_factory=time.monotonic)
    artifacts: dict[str, Any] = field(default_factory=dict)

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f}s] {text}"
        print(line, flush=True)
        if self.log is not None:
            self.log.write(line + "\n")
            self.log.flush()


# a section fills ``result`` as it goes, so a failure or timeout still leaves what it measured
Runner = Callable[[dict[str, Any], Context, dict[str, Any]], None]


def new_record(section: Section, status: str, box_s: float) -> dict[str, Any]:
    return {
        "name": section.name,
        "title": section.title,
        "box_s": round(box_s, 1),
        "config": section.config,
        "status": status,
        "result": {},
    }


def run_section(section: Section, runner: Runner, ctx: Context, box_s: float) -> dict[str, Any]:
    """Run one section inside its time box; never raises (but for KeyboardInterrupt)."""
    record = new_record(section, "ok", box_s)
    ctx.say(f"== {section.name}: {section.title} (time box {box_s:.3g} s)")
    start = time.monotonic()
    try:
        with time_box(box_s):
            runner(section.config, ctx, record["result"])
    except SectionTimeout as exc:
        record.update(status="timeout", error=describe(exc))
    except Exception as exc:  # a failing section is a result; the next one still runs
        record.update(status="failed", error=describe(exc))
    try:
        release_gpu_memory()
    except Exception as exc:  # e.g. a sticky CUDA error: later sections will fail and say so themselves
        record["cleanup_error"] = describe(exc)
    record["seconds"] = round(time.monotonic() - start, 2)
    error = record.get("error")
    ctx.say(
        f"   {section.name}: {record['status']} in {record['seconds']:.1f} s"
        + (f" - {error['type']}: {error['message']} at {error['in_repo'] or error['where']}" if error else "")
    )
    return record


def run_plan(
    sections: Sequence[Section],
    runners: Mapping[str, Runner],
    ctx: Context,
    deadline: float,
    on_record: Callable[[dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """Each section in order, boxed by its own limit and by what is left of the budget (``deadline``,
    time.monotonic()); one with less than half its box left is skipped rather than cut short."""
    records = []
    for section in sections:
        left = deadline - time.monotonic()
        if left < section.box_s / 2:
            record = new_record(section, "skipped", section.box_s)
            record["reason"] = f"{max(left, 0):.0f} s of the budget left, time box {section.box_s:.0f} s"
            ctx.say(f"== {section.name}: skipped ({record['reason']})")
        else:
            record = run_section(section, runners[section.name], ctx, min(section.box_s, left))
        records.append(record)
        on_record(record)
    return records


def release_gpu_memory() -> None:
    """Between sections: drop the last section's tensors and cached blocks, so each peak is its own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------- results


def _jsonable(value: Any) -> Any:
    """Strict JSON: non-finite floats as strings ("nan", "inf"), paths and dtypes as text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Replace ``path`` atomically: a run killed mid-write keeps the previous complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(results), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------- peaks and MFU


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def datasheet_peak(gpu_name: str, dtype: str) -> Optional[tuple[str, float]]:
    """(table entry, FLOP/s) of the first PEAK_TFLOPS entry whose words appear in order in ``gpu_name``
    and that lists ``dtype``; None when the GPU or the dtype is not in the table."""
    words = _words(gpu_name)
    for entry, peaks in PEAK_TFLOPS:
        key = _words(entry)
        if any(words[i : i + len(key)] == key for i in range(len(words) - len(key) + 1)):
            return (entry, peaks[dtype] * 1e12) if dtype in peaks else None
    return None


def mfu_peak(gpu_name: str, dtype: str, measure: Callable[[], float]) -> dict[str, Any]:
    """The MFU denominator: the datasheet's dense peak when the table has this GPU and dtype, else a
    measured large matmul (``measure``); ``source`` says which."""
    found = datasheet_peak(gpu_name, dtype)
    if found is not None:
        return {"flops": found[1], "source": f"datasheet: {found[0]} {dtype} dense"}
    return {
        "flops": measure(),
        "source": f"measured: large {dtype} matmul (device or dtype not in the table)",
    }


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels, so wall-clock timings cover them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)




# ---------------------------------------------------------------- sections


def cpu_environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def section_environment(config: dict[str, Any], ctx: Context, result: dict[str, Any]) -> None:
    result.update(cpu_environment())
    props = torch.cuda.get_device_properties(0)
    result.update(
        gpu=props.name,
        gpu_count=torch.cuda.device_count(),
        capability=f"{props.major}.{props.minor}",
        bf16_supported=torch.cuda.is_bf16_supported(),
        memory_gib=round(props.total_memory / 2**30, 1),
        multiprocessors=props.multi_processor_count,
        cudnn=torch.backends.cudnn.version(),
    )
    with contextlib.suppress(ImportError, RuntimeError):
        import torch.cuda.nccl as nccl

        version = nccl.version()  # a tuple in current torch, an int in old releases
        result["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    with contextlib.suppress(ImportError):
        import triton

        result["triton"] = triton.__version__
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        result["driver"] = smi.stdout.strip() or None
    ctx.say(
        f"   {result['gpu']} (sm {result['capability']}, {result['memory_gib']} GiB), "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, CPU {result['cpu_capability']}"
    )
    # the loop's MFU denominator when train.peak_flops is unset is an 8192^3 product on CUDA: how far a
    # smaller one is from it and from the datasheet says how much a small probe would overstate MFU
    for size in config["matmul_sizes"]:
        peak = matmul_rate(torch.device("cuda"), "bf16", (size, size, size), seconds=0.3)
        result[f"matmul_bf16_{size}_tflops"] = round(peak / 1e12, 1)
    sheet = datasheet_peak(props.name, "bf16")
    result["datasheet_bf16_tflops"] = sheet[1] / 1e12 if sheet else None


def junit_counts(xml_path: Path) -> dict[str, Any]:
    """passed/failed/errors/skipped and the failing test ids from pytest's --junitxml file."""
    root = ET.parse(xml_path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failing = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {
        "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
        "failed": counts["failures"],
        "errors": counts["errors"],
        "skipped": counts["skipped"],
        "failing": failing,
    }


def stream(argv: Sequence[str], ctx: Context, prefix: str, env: Optional[dict[str, str]] = None) -> int:
    """Run ``argv`` from the repository root, its output line by line into the log; the whole process
    group is killed when the caller is interrupted (the time box)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "utf-8",
        **(env or {}),
    }
    # rich draws its tables with box characters: decode them as UTF-8 whatever the locale says
    proc = subprocess.Popen(
        list(argv),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            ctx.say(f"   {prefix}| {line.rstrip()}")
        return proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def section_tests(config: dict[str, Any], ctx: Context, result: dict[str, Any]) -> None:
    xml = ctx.out / "tests.xml"
    xml.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-u",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        config["marker"],
        "--lmforge-device",
        "cuda",
        f"--junitxml={xml}",
        *config["paths"],
    ]
    result["command"] = " ".join(argv[1:])
    result["returncode"] = stream(argv, ctx, "pytest")
    result.update(junit_counts(xml))


def _model_and_objective(config: dict[str, Any]) -> tuple[Any, Any, Any]:
    from lmforge.model.heads import LanguageModel
    from lmforge.model.transformer import TransformerConfig
    from lmforge.train.objectives import MLMMasker, MLMObjective, causal_lm_objective

    mcfg = TransformerConfig(**config["model"])
    torch.manual_seed(0)
    if config["objective"] == "clm":
        return mcfg, LanguageModel(mcfg, heads=("lm",)), causal_lm_objective
    # ids 0-4 stand for BERT's special tokens ([MASK] = 4); the synthetic tokens below never use them
    return (
        mcfg,
        LanguageModel(mcfg, heads=("mlm",)),
        MLMObjective(MLMMasker(mcfg.vocab_size, 4, list(range(5)))),
    )


def train_throughput(
    config: dict[str, Any],
    ctx: Context,
    result: dict[str, Any],
    *,
    compile: bool = False,
    out_dir: Optional[Path] = None,
    device: torch.device = torch.device("cuda"),
) -> None:
    """``config['steps']`` steps of lmforge's train_loop on synthetic token blocks; fills ``result`` with
    tokens/s after warmup, MFU, peak memory, losses and the optimizer lmforge chose. (The sections run it
    on cuda; the tests on the CPU with a tiny model.)"""
    from bench.pretrain_vs_hf import Stamped, rate
    from lmforge.config import build_config
    from lmforge.model.transformer import count_parameters, flops_per_token
    from lmforge.train.config import TrainConfig
    from lmforge.train.data import TensorBlockSource
    from lmforge.train.loop import train_loop
    from lmforge.train.optim import build_optimizer

    cuda = device.type == "cuda"
    mcfg, model, inner = _model_and_objective(config)
    seq, batch, steps = config["seq_len"], config["batch_size"], config["steps"]
    fpt = flops_per_token(mcfg, seq, count_parameters(model, exclude_embeddings=True))
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    # 8192^3 keeps an H100-class GPU busy for a millisecond per matmul; a CPU needs seconds for that
    peak = mfu_peak(
        name,
        config["precision"],
        lambda: matmul_rate(device, config["precision"], (8192,) * 3 if cuda else (1024,) * 3, seconds=0.5),
    )
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(5, mcfg.vocab_size, ((steps + 1) * batch * seq,), generator=g)
    source = TensorBlockSource(tokens, seq, batch, prefix_id=2 if config["objective"] == "mlm" else None)
    objective = Stamped(inner)
    train_cfg = build_config(
        TrainConfig,
        {
            "steps": steps,
            "batch_size": batch,
            "precision": config["precision"],
            "compile": compile,
            "log_every": steps,
            "progress": False,
            "tensorboard": False,
            "checkpoint_every": None,
            "peak_flops": peak["flops"],
            "optim": {"lr": 3e-4},
            "schedule": {"warmup": 0.1},
        },
    )
    result.update(
        parameters=count_parameters(model),
        flops_per_token=fpt,
        peak=peak,
        tokens_per_step=batch * seq,
        compile=compile,
    )
    ctx.say(
        f"   {count_parameters(model) / 1e6:.1f}M parameters, batch {batch} x {seq}, {steps} steps, "
        f"{config['precision']}{', compiled' if compile else ''}"
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    loop = train_loop(
        model, objective, source, train_cfg, device=device, out_dir=out_dir, flops_per_token=fpt
    )
    synchronize(device)  # the last step's kernels are done before the clock stops
    end = time.perf_counter()
    # step k ends where step k+1's forward starts: the loop reads the loss and gradient norm back every
    # step, so these stamps follow the GPU; the last step is left out, its end holds the loop's wrap-up
    ends = objective.stamps[1:]
    tps = rate(ends, config["warmup"], batch * seq)
    losses = list(loop.losses.values())
    result.update(
        steps=loop.step,
        bad_steps=loop.bad_steps,
        seconds=round(end - start, 2),
        first_step_s=round(ends[0] - objective.stamps[0], 3),
        tokens_per_s=round(tps),
        step_ms=round(1000 * batch * seq / tps, 2),
        mfu=round(fpt * tps / peak["flops"], 4),
        peak_memory_gib=round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
        first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
        losses_finite=all(math.isfinite(v) for v in losses),
        # what build_optimizer picks for these CUDA parameters (the loop's own optimizer is internal)
        fused_adamw=build_optimizer(model, train_cfg.optim, mcfg.n_layers, device).defaults.get("fused"),
        parameters_on=str(next(model.parameters()).device),
    )
    ctx.say(
        f"   {result['tokens_per_s']:,} tokens/s after {config['warmup']} warmup steps, "
        f"MFU {result['mfu']:.1%} ({peak['source']}), peak memory {result['peak_memory_gib']} GiB, "
        f"loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}, fused AdamW {result['fused_adamw']}"
    )


def section_pretrain(config: dict[str, Any], ctx: Context, result: dict[str, Any]) -> None:
    train_throughput(config, ctx, result)


def section_compile(config: dict[str, Any], ctx: Context, result: dict[str, Any]) -> None:
    for mode in ("eager", "inductor"):
        result[mode] = {}
        try:
            train_throughput(config, ctx, result[mode], compile=mode == "inductor")
        finally:
            if mode == "inductor":
                torch._dynamo.reset()  # later sections start without this model's compiled graphs
            release_gpu_memory()
    eager, compiled = result["eager"], result["inductor"]
    result["speedup"] = round(compiled["tokens_per_s"] / eager["tokens_per_s"], 3)
    # the first compiled step traces and generates kernels; an eager first step is the baseline cost
    result["compile_s"] = round(compiled["first_step_s"] - eager["first_step_s"], 1)
    ctx.say(f"   inductor vs eager: {result['speedup']:.2f}x tokens/s, compile about {result['compile_s']} s")


def scaler_state(run_dir: Path) -> dict[str, Any]:
    """The GradScaler state the loop saved in the last checkpoint of a run (the loop keeps its scaler
    to itself; its checkpoint is where the scale can be read)."""
    from lmforge.train.checkpoint import latest_checkpoint

    last = latest_checkpoint(run_dir / "checkpoints")
    if last is None:
        raise RuntimeError(f"no checkpoint under {run_dir}: the scaler's state cannot be read")
    scaler = json.loads((last / "state.json").read_text(encoding="utf-8"))["state"].get("scaler")
    if not scaler:
        raise RuntimeError(f"{last}/state.json holds no GradScaler state: was fp16 loss scaling on?")
    return dict(scaler)


def section_fp16(config: dict[str, Any], ctx: Context, result: dict[str, Any]) -> None:
    run_dir = ctx.out / "fp16-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    train_throughput(config, ctx, result, out_dir=run_dir)  # with out_dir the loop checkpoints its end
    scaler = scaler_state(run_dir)
    # GradScaler starts at 2**16 and halves on every overflow, so the scale says how many steps it skipped
    result.update(
        scaler_scale=scaler["scale"],
        scaler_growth_tracker=scaler.get("_growth_tracker"),
        overflow_steps_implied=round(math.log2(2.0**16 / scaler["scale"])) if scaler["scale"] else None,
    )
    shutil.rmtree(run_dir, ignore_errors=True)
    ctx.say(
        f"   GradScaler scale {scaler['scale']} after {result['steps']} steps, "
        f"losses finite: {result['losses_finite']}"
    )


def _last_record(path: Path, key: str) -> Optional[dict[str, Any]]:
    """The last line of a metrics.jsonl that has ``key``."""
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    with_key = [r for r in records if key in r]
    return with_key[-1] if with_key else None


def quickstart_accuracy(run_dir: Path) -> dict[str, Any]:
    """Test accuracy of the fine-tuned model and of the baselines from the finetune stage's report."""
    report = json.loads((run_dir / "finetune" / "report" / "report.json").read_text(encoding="utf-8"))
    rows = {row["name"]: row for row in report["rows"]}
    models = [name for name, row in rows.items() if row["kind"] == "model"]
    if not models:
        raise RuntimeError(f"{run_dir}/finetune/report/report.json has no model row")
    return {
        "test_accuracy": rows[models[0]]["metrics"]["accuracy"],
        "model_row": models[0],
        "baselines": {
            name: row["metrics"]["accuracy"] for name, row in rows.items() if row["kind"] == "baseline"
        },
    }


def section_quickstart(config: dict[str, Any], ctx: Context, result: dict[str, Any]) -> None:
    run_dir = ctx.out / "quickstart"
    shutil.rmtree(run_dir, ignore_errors=True)  # finished stages would be skipped, and measure nothing
    argv = [
        sys.executable,
        "-u",
        "-m",
        "lmforge",
        "quickstart",
        "--device",
        config["device"],
        "--out",
        str(run_dir),
        "--minutes",
        str(config["minutes"]),
    ]
    result["command"] = " ".join(["lmforge", *argv[4:]])
    start = time.monotonic()
    try:
        result["returncode"] = stream(argv, ctx, "quickstart")
    finally:  # a run stopped by the time box still says how long it ran and leaves its model if it got there
        result["wall_s"] = round(time.monotonic() - start, 1)
        if (run_dir / "finetune" / "config.json").is_file():
            ctx.artifacts["quickstart_run"] = run_dir
    if result["returncode"] != 0:
        raise RuntimeError(f"lmforge quickstart exited with {result['returncode']} (see the log)")
    result.update(quickstart_accuracy(run_dir))
    pretrain = _last_record(run_dir / "pretrain" / "metrics.jsonl", "tokens_per_s")
    if pretrain is not None:
        # the loop's own MFU: against its measured 1024^3 matmul (see the environment section's figures)
        result["pretrain"] = {k: pretrain.get(k) for k in ("step", "tokens_per_s", "mfu", "train_loss")}
    ctx.say(
        f"   quickstart: {result['wall_s']} s, test accuracy {result['test_accuracy']:.4f}, "
        f"baselines {result['baselines']}"
    )


def section_serve(config: dict[str, Any], ctx: Context, result: dict[str, Any]) -> None:
    from bench.serve_bench import _records, server_rps

    run_dir = ctx.artifacts.get("quickstart_run")
    if run_dir is None:
        raise RuntimeError("no model to serve: the quickstart section did not leave RUN_DIR/finetune")
    model = run_dir / "finetune"
    texts = [r["text"] for r in _records(run_dir / "sentiment" / "test.jsonl", config["requests"])]
    # lmforge serve has no device setting: its Predictor runs on the CPU even on this machine
    result.update(
        model=str(model), server_device="cpu", clients=config["clients"], requests=config["requests"]
    )
    for mode in ("off", "on"):
        with contextlib.chdir(ROOT):  # server_rps starts `lmforge serve` with PYTHONPATH=cwd
            rps = server_rps(
                model, texts, mode == "on", config["clients"], config["requests"], config["threads"]
            )
        result[f"rps_{mode}"] = round(rps, 1)
        ctx.say(f"   micro-batching {mode}: {result[f'rps_{mode}']} requests/s")
    result["speedup"] = round(result["rps_on"] / result["rps_off"], 2)
    ctx.say(f"   micro-batching on/off: {result['speedup']}x (target >= 3x)")


RUNNERS: dict[str, Runner] = {
    "environment": section_environment,
    "tests": section_tests,
    "pretrain_gpt2": section_pretrain,
    "pretrain_bert": section_pretrain,
    "compile": section_compile,
    "fp16": section_fp16,
    "quickstart": section_quickstart,
    "serve": section_serve,
}


# ---------------------------------------------------------------- main


def format_plan(sections: Sequence[Section]) -> str:
    lines = [f"{'#':>2}  {'section':14s} {'box':>6s}  what"]
    for i, s in enumerate(sections, 1):
        lines.append(f"{i:>2}  {s.name:14s} {s.box_s:5.0f}s  {s.title}")
        lines.append(f"{'':25s}{json.dumps(s.config, separators=(',', ':'))}")
    lines.append(f"time boxes in all: {sum(s.box_s for s in sections):.0f} s")
    return "\n".join(lines)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="directory for gpu_check.json and gpu_check.log")
    ap.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all sections together"
    )
    ap.add_argument("--only", nargs="+", choices=[s.name for s in plan()], help="run these sections only")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = ap.parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):  # progress must never fail on a character the terminal lacks
        sys.stdout.reconfigure(errors="replace", line_buffering=True)
    sections = [s for s in plan() if not args.only or s.name in args.only]
    if args.dry_run:
        print(format_plan(sections), flush=True)
        return 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "gpu_check.json"
    with open(out / "gpu_check.log", "w", encoding="utf-8") as log:
        ctx = Context(out=out, log=log)
        doc: dict[str, Any] = {
            "script": "bench/gpu_check.py",
            "argv": list(argv if argv is not None else sys.argv[1:]),
            "started": utc_now(),
            "budget_s": args.budget,
            "environment": cpu_environment(),
            "plan": [asdict(s) for s in sections],
            "sections": {},
        }
        if not torch.cuda.is_available():
            doc.update(
                status="skipped",
                reason=f"no CUDA GPU: torch.cuda.is_available() is False (torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda})",
            )
            ctx.say(f"{doc['reason']}; nothing to check. Wrote {results_path}")
            write_results(results_path, doc)
            return 0
        doc["status"] = "running"
        write_results(results_path, doc)

        def keep(record: dict[str, Any]) -> None:
            doc["sections"][record["name"]] = record
            write_results(results_path, doc)

        records = run_plan(sections, RUNNERS, ctx, ctx.started + args.budget, keep)
        doc.update(
            status="done",
            finished=utc_now(),
            seconds=round(time.monotonic() - ctx.started, 1),
            statuses={r["name"]: r["status"] for r in records},
        )
        write_results(results_path, doc)
        ctx.say(f"done in {doc['seconds']} s: " + ", ".join(f"{k} {v}" for k, v in doc["statuses"].items()))
        ctx.say(f"wrote {results_path}")
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
