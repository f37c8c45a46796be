"""What this machine can do, measured: native bf16, matmul throughput per precision, thread scaling.

`train.precision: auto` (every stage's default) is decided here. bf16 is chosen only where it is both
native (CPU: AVX512_BF16 or AMX instructions that oneDNN will use; CUDA: a device with bf16) and
measured faster than fp32 on this device by a short probe; CUDA devices without bf16 get fp16 with
loss scaling; everything else fp32. On a CPU without native bf16 the emulated kernels ran a 512x512
matmul 20-80x slower than fp32, so a precision that suits one machine is never hard-coded.

The probe takes well under 2 s and is cached per device (CPU model and ISA, or GPU name) and torch
version in the user's cache directory. No probe draws from the global RNG: a
resumed run must see exactly the random numbers an uninterrupted one sees.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel

from lmforge.config import ConfigError

__all__ = [
    "PrecisionChoice",
    "autocast_context",
    "cache_path",
    "choose_precision",
    "cpu_has_native_bf16",
    "device_key",
    "choose_threads",
    "matmul_rate",
    "measure_peak_flops",
    "probe_precisions",
    "resolve_precision",
    "with_precision",
]

ConfigT = TypeVar("ConfigT", bound=BaseModel)
PRECISIONS = ("fp32", "bf16", "fp16")
# bf16 must beat fp32 by this much to be chosen: below it the accuracy cost of bf16 buys nothing
MIN_SPEEDUP = 1.15
_PROBE_SHAPE = (2048, 256, 256)  # (tokens, in, out): a small model's linear layer at ~2k tokens a batch


@dataclass
class PrecisionChoice:
    """The precision a run uses and why (printed, and written to the run's config and metrics)."""

    precision: str
    requested: str
    reason: str
    native_bf16: bool
    gflops: dict[str, float] = field(default_factory=dict)  # probe: precision -> GFLOP/s on this device
    warning: Optional[str] = None

    def line(self) -> str:
        rates = ", ".join(f"{k} {v:,.0f}" for k, v in self.gflops.items())
        return f"precision {self.precision} ({self.reason}" + (f"; probe GFLOP/s: {rates})" if rates else ")")


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for one forward pass: weights stay fp32, matmuls run in ``precision``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_has_native_bf16() -> bool:
    """bf16 instructions that the CPU has and this torch will use (``ONEDNN_MAX_CPU_ISA`` and
    ``ATEN_CPU_CAPABILITY`` can cap them; torch's oneDNN check follows both)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        flags = any(f in text for f in (" avx512_bf16", " amx_bf16"))
    except OSError:  # not Linux: trust torch's own check alone
        flags = True
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn = False
    capability = torch.backends.cpu.get_cpu_capability()
    return flags and onednn and capability not in ("DEFAULT", "NO AVX", "AVX2")


def _cuda_has_bf16(device: torch.device) -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def device_key(device: torch.device) -> str:
    """What the probe's result depends on: the chip, its enabled ISA, torch's version."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = "cpu"
        try:
            fields = {}
            for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "cpu family", "model") and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
            name = " ".join(fields.get(k, "") for k in ("model name", "cpu family", "model")).strip() or name
        except OSError:
            pass
        name += f" {torch.backends.cpu.get_cpu_capability()}"
        isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
        if isa:
            name += f" onednn<={isa}"
    return f"{name} | torch {torch.__version__}"


def cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "lmforge" / "precision-probe.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(
    device: torch.device,
    precision: str,
    shape: tuple[int, int, int] = _PROBE_SHAPE,
    seconds: float = 0.2,
    max_seconds: float = 0.6,
) -> float:
    """FLOP/s of ``F.linear`` on fp32 tensors under the autocast of ``precision`` (the path training
    takes). Stops after ``seconds`` of timed calls, or ``max_seconds`` when a call is slow (emulated
    bf16), so the probe stays short. Draws from its own generator, never the global RNG."""
    m, k, n = shape
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(m, k, device=device, generator=gen)
    w = torch.randn(n, k, device=device, generator=gen)
    with torch.no_grad(), autocast_context(precision, device):
        F.linear(x, w)  # kernels chosen and warmed up
        _sync(device)
        calls, start = 0, time.perf_counter()
        while True:
            F.linear(x, w)
            calls += 1
            _sync(device)
            elapsed = time.perf_counter() - start
            if (elapsed >= seconds and calls >= 3) or elapsed >= max_seconds:
                return 2.0 * m * k * n * calls / elapsed


def measure_peak_flops(device: torch.device, precision: str = "fp32") -> float:
    """Achievable matmul FLOP/s of this device in ``precision`` (the MFU denominator when the user gives
    none): a 1024^3 product on the path training takes, timed briefly, RNG-free."""
    size = 8192 if device.type == "cuda" else 1024  # a GPU's 1024^3 product is far from its peak
    return matmul_rate(device, precision, (size, size, size), seconds=0.3, max_seconds=1.5)


def choose_threads(candidates: Optional[list[int]] = None, seconds: float = 0.05,
                   rounds: int = 3) -> tuple[int, dict[int, float]]:
    """The intra-op thread count that runs a matmul fastest right now, and GFLOP/s per count tried
    (the median of ``rounds`` interleaved rounds: a neighbour's load comes and goes, and a count must
    be fast under it, not in one lull). Load-dependent (another process holding a core makes every
    extra thread wait), so never cached: with one of two cores busy, two threads once ran a tiny
    pretraining 5.8x slower than one."""
    before = torch.get_num_threads()
    if candidates is None:
        candidates = sorted({before, max(1, before // 2), 1}, reverse=True)
    seen: dict[int, list[float]] = {n: [] for n in candidates}
    try:
        for _ in range(rounds):
            for n in candidates:
                torch.set_num_threads(n)
                seen[n].append(matmul_rate(torch.device("cpu"), "fp32", (1024, 256, 512), seconds=seconds) / 1e9)
    finally:
        torch.set_num_threads(before)
    rates = {n: sorted(r)[len(r) // 2] for n, r in seen.items()}
    best = max(rates, key=lambda n: (rates[n] * (1.05 if n == before else 1.0), n))  # ties keep the default
    return best, rates


def probe_precisions(device: torch.device, candidates: tuple[str, ...], use_cache: bool = True) -> dict[str, float]:
    """GFLOP/s per candidate precision on ``device``, from the cache when this device was probed before."""
    key = device_key(device)
    path = cache_path()
    cache: dict[str, dict[str, float]] = {}
    if use_cache and path.is_file():
        try:
            cache = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            cache = {}  # a damaged cache is re-measured, never an error
    known = cache.get(key, {})
    if all(c in known for c in candidates):
        return {c: float(known[c]) for c in candidates}
    # One thread, interleaved rounds, the best of each: the choice is about kernels, and on a loaded
    # machine a multi-threaded matmul waits for its slowest thread (two threads, one pass each, once
    # measured bf16 at 0.66x fp32 on a CPU where one thread measures it 4x faster)
    rates = {c: 0.0 for c in candidates}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for _ in range(3):
            for c in candidates:
                rates[c] = max(rates[c], matmul_rate(device, c, seconds=0.08, max_seconds=0.25) / 1e9)
    finally:
        torch.set_num_threads(threads)
    if use_cache:
        cache[key] = {**known, **rates}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(cache, indent=1), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home still trains; it only probes again next time
    return rates


def choose_precision(
    requested: str,
    device_type: str,
    native_bf16: bool,
    measure: Callable[[tuple[str, ...]], dict[str, float]],
) -> PrecisionChoice:
    """The decision, given the facts; ``measure(candidates)`` returns GFLOP/s per precision and is
    only called where the answer depends on it (tests pass a fake)."""
    if requested == "fp16" and device_type != "cuda":
        raise ConfigError(
            "train.precision=fp16: fp16 with loss scaling needs a CUDA device; on CPU use precision: auto "
            f"({'bf16 is native here' if native_bf16 else 'it chooses fp32: this CPU has no native bf16'})"
        )
    if requested == "fp32":
        return PrecisionChoice("fp32", requested, "as configured", native_bf16)
    if requested == "fp16":
        return PrecisionChoice("fp16", requested, "as configured, with loss scaling", native_bf16)
    if requested == "bf16":
        if native_bf16:
            return PrecisionChoice("bf16", requested, "as configured", native_bf16)
        rates = measure(("fp32", "bf16"))
        slowdown = rates["fp32"] / max(rates["bf16"], 1e-9)
        where = "this CPU" if device_type == "cpu" else "this GPU"
        return PrecisionChoice(
            "bf16", requested, "as configured", native_bf16, rates,
            warning=f"train.precision=bf16: {where} has no native bf16; measured {slowdown:.1f}x slower than "
                    "fp32 here (use precision: auto or fp32)",
        )
    if requested != "auto":
        raise ConfigError(f"train.precision={requested!r}: expected one of auto, {', '.join(PRECISIONS)}")
    if not native_bf16:
        if device_type == "cuda":
            return PrecisionChoice("fp16", requested, "auto: this GPU has no bf16; fp16 with loss scaling",
                                   native_bf16)
        return PrecisionChoice("fp32", requested, "auto: this CPU has no native bf16", native_bf16)
    rates = measure(("fp32", "bf16"))
    speedup = rates["bf16"] / max(rates["fp32"], 1e-9)
    if speedup >= MIN_SPEEDUP:
        return PrecisionChoice("bf16", requested, f"auto: native bf16, measured {speedup:.1f}x fp32", native_bf16,
                               rates)
    return PrecisionChoice("fp32", requested, f"auto: bf16 measured only {speedup:.2f}x fp32", native_bf16, rates)


def resolve_precision(requested: str, device: torch.device, use_cache: bool = True) -> PrecisionChoice:
    """``train.precision`` -> the precision this run uses on ``device`` (see the module docstring)."""
    native = _cuda_has_bf16(device) if device.type == "cuda" else cpu_has_native_bf16()
    return choose_precision(requested, device.type, native,
                            lambda candidates: probe_precisions(device, candidates, use_cache))


def with_precision(config: ConfigT, choice: PrecisionChoice) -> ConfigT:
    """A stage config whose ``train.precision`` is the one the run uses (for its written config.yaml)."""
    train = getattr(config, "train")
    return config.model_copy(update={"train": train.model_copy(update={"precision": choice.precision})})


def choice_record(choice: PrecisionChoice) -> dict[str, object]:
    """The choice as written into metrics.jsonl (one line, step 0)."""
    record = asdict(choice)
    return {"event": "precision", **{k: v for k, v in record.items() if v is not None}}
