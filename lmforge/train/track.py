"""What the user sees and what is kept: metrics JSONL, TensorBoard events, Weights & Biases, a progress bar, MFU."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lmforge.progress import console
from lmforge.train.config import DEFAULT_TRACKERS, WandbConfig


def measure_peak_flops(
    device: torch.device, dtype: torch.dtype = torch.float32, size: int = 1024, seconds: float = 0.3
) -> float:
    """Achievable matmul FLOP/s of this device and dtype, timed briefly (the MFU denominator when the
    user configures none: no table of vendor figures to go stale or be wrong for this machine)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm up kernels
    _sync(device)
    n, start = 0, time.perf_counter()
    while True:
        a @ b
        n += 1
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 3:
            return 2.0 * size**3 * n / elapsed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _scalar_name(key: str) -> str:
    """train_loss -> train/loss, val_acc -> val/acc: TensorBoard and W&B group charts by the prefix."""
    return key.replace("val_", "val/").replace("train_", "train/")


class _WandbWriter:
    """Metrics to a Weights & Biases run whose files live under OUT/wandb; offline unless configured
    otherwise, so that tracking never needs the network or an account."""

    def __init__(self, out_dir: Path, settings: WandbConfig) -> None:
        import wandb  # TrainConfig checked that it is installed

        config_file = out_dir / "config.yaml"  # the stage's resolved config, when it wrote one
        config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else None
        self.run = wandb.init(project=settings.project, name=settings.name or out_dir.resolve().name,
                              dir=str(out_dir), mode=settings.mode, config=config)
        if settings.mode == "offline":
            console.print(f"wandb: offline run in {Path(self.run.dir).parent}; upload it later with `wandb sync`")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class Tracker:
    """Writes metrics to ``metrics.jsonl``, TensorBoard and W&B as ``trackers`` say (rank 0 only) and
    drives the progress bar."""

    def __init__(
        self,
        out_dir: Optional[Path],
        enabled: bool,
        total_steps: int,
        trackers: Sequence[str] = DEFAULT_TRACKERS,
        progress: bool = True,
        wandb: Optional[WandbConfig] = None,
    ) -> None:
        self.enabled = enabled and out_dir is not None
        self._jsonl = None
        self._tb = None
        self._wandb: Optional[_WandbWriter] = None
        if self.enabled:
            assert out_dir is not None
            out_dir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(out_dir / "metrics.jsonl", "a", encoding="utf-8")
            if "tensorboard" in trackers:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(out_dir / "tb"))
            if "wandb" in trackers:
                self._wandb = _WandbWriter(out_dir, wandb or WandbConfig())
        self._progress = Progress(
            TextColumn("[bold]pretrain"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("step {task.completed:,.0f}/{task.total:,.0f} loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not (enabled and progress and sys.stderr.isatty()),
        )
        self._task = self._progress.add_task("train", total=total_steps, loss="-")

    def __enter__(self) -> "Tracker":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)
        self.close()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        assert self._jsonl is not None
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        scalars = {_scalar_name(k): v for k, v in metrics.items() if isinstance(v, (int, float))}
        if self._tb is not None:
            for name, value in scalars.items():
                self._tb.add_scalar(name, value, step)
        if self._wandb is not None:
            self._wandb.log(step, scalars)

    def advance(self, step: int, loss: Optional[float] = None) -> None:
        fields = {"loss": f"{loss:.4f}"} if loss is not None else {}
        self._progress.update(self._task, completed=step, **fields)

    def message(self, text: str) -> None:
        if self.enabled:
            console.print(text)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.close()
            self._wandb = None
