"""What the user sees and what is kept: metrics JSONL, TensorBoard events, Weights & Biases, a progress bar, MFU."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lmforge.config import ConfigError
from lmforge.progress import console
from lmforge.train.config import DEFAULT_TRACKERS, WandbConfig


class MFUMeter:
    """Model FLOPs utilisation against the peak of the precision the run uses, never above 1: where the
    achieved rate beats the probe's (the probe's shape is not the model's), the peak is raised to the
    best rate seen, so the figure stays a fraction of what this device has shown it can do."""

    def __init__(self, flops_per_token: Optional[float], peak: Optional[float], world_size: int = 1) -> None:
        self.flops_per_token, self.peak, self.world_size = flops_per_token, peak, world_size
        self.raised = False

    def __call__(self, tokens_per_s: float) -> Optional[float]:
        if not self.flops_per_token or not self.peak:
            return None
        achieved = self.flops_per_token * tokens_per_s / self.world_size  # per device
        if achieved > self.peak:
            self.peak, self.raised = achieved, True
        return achieved / self.peak


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
        import wandb

        self.run.finish()
        # finish() can return before wandb's service process has written the run file; teardown waits for
        # it, so an offline run is complete on disk when training returns (seen missing under load)
        wandb.teardown()


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
        budget: Optional[float] = None,
        label: str = "train",
        wandb: Optional[WandbConfig] = None,
    ) -> None:
        """The bar counts steps, or, under a time ``budget``, whichever of steps and time is further
        along (the run stops at the first of the two), so its percentage and ETA are the run's."""
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
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("step {task.fields[step]} loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not (enabled and progress and sys.stderr.isatty()),
        )
        self.total_steps, self.budget = total_steps, budget
        self._task = self._progress.add_task(label, total=self.total, loss="-", step="0")

    @property
    def total(self) -> float:
        return 1000.0 if self.budget is not None else float(self.total_steps)

    def completed(self, step: int, elapsed: float) -> float:
        """Where the bar stands (out of ``total``)."""
        if self.budget is None:
            return float(step)
        return 1000.0 * min(1.0, max(step / self.total_steps, elapsed / self.budget))

    def __enter__(self) -> "Tracker":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)
        self.close()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.event(step, metrics)
        scalars = {_scalar_name(k): v for k, v in metrics.items() if isinstance(v, (int, float))}
        if self._tb is not None:
            for name, value in scalars.items():
                self._tb.add_scalar(name, value, step)
        if self._wandb is not None:
            self._wandb.log(step, scalars)

    def event(self, step: int, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl; alone, a fact about the run (the precision and threads it chose)
        that is no metric to chart."""
        if self.enabled:
            assert self._jsonl is not None
            self._jsonl.write(json.dumps({"step": step, "time": round(time.time(), 3), **record}) + "\n")
            self._jsonl.flush()

    def advance(self, step: int, elapsed: float, loss: Optional[float] = None) -> None:
        fields = {"loss": f"{loss:.4f}"} if loss is not None else {}
        shown = f"{step:,}" if self.budget is not None else f"{step:,}/{self.total_steps:,}"
        self._progress.update(self._task, completed=self.completed(step, elapsed), step=shown, **fields)

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


Curves = dict[str, tuple[list[int], list[float]]]  # {split: (steps, values)}

# metrics.jsonl keys that are curves: the loop's per-window train loss and each evaluation's loss
_CURVE_KEYS = {"train_loss": "train", "val_loss": "validation"}


def read_metrics(path: str | Path) -> tuple[Curves, dict[str, Any]]:
    """The one reader of ``metrics.jsonl``: ({"train": (steps, losses), "validation": ...}, the last
    throughput record). Also reads the ``{"step", "split", "loss"}`` lines that fine-tuning wrote to
    ``curves.jsonl`` before it wrote none (fine-tuning now logs to metrics.jsonl), so an older run still plots.

    A malformed line is a ConfigError naming file and line, except a cut last line (a run killed
    while writing), which is skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"metrics file not found: {path}")
    curves: Curves = {}
    last: dict[str, Any] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break  # cut by an interruption
            raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{path}:{number}: expected a JSON object, got {line.strip()[:60]}")
        found = [(split, record[key]) for key, split in _CURVE_KEYS.items() if key in record]
        if "loss" in record and isinstance(record.get("split"), str):
            found.append((record["split"], record["loss"]))
        if found:
            step = record.get("step")
            if not isinstance(step, int) or isinstance(step, bool):
                raise ConfigError(f"{path}:{number}: 'step' must be an integer; got {line.strip()[:60]}")
            for split, value in found:
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise ConfigError(f"{path}:{number}: the {split} loss must be a number, got {value!r}")
                steps, values = curves.setdefault(split, ([], []))
                steps.append(step)
                values.append(float(value))
        if "tokens_per_s" in record:
            last = record
    return curves, last
