"""What runs around the training loop, the same for pretraining and fine-tuning: the device, joining
torchrun's process group, the precision (chosen before any data is read, so a bad choice fails
first), the checkpoint to resume from, the seeds, and the best checkpoint's weights at the end."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch
from safetensors.torch import load_model
from torch import nn

from lmforge.config import ConfigError
from lmforge.train import checkpoint as ckpt
from lmforge.train.config import TrainConfig
from lmforge.train.distributed import DistInfo, init_distributed, resolve_device, shutdown
from lmforge.train.hardware import PrecisionChoice, resolve_precision

__all__ = ["Run", "run", "seed_model", "seed_training", "reload_best"]


@dataclass(frozen=True)
class Run:
    device: torch.device
    info: DistInfo  # this process's rank among torchrun's (rank 0 of 1 without torchrun)
    precision: PrecisionChoice
    resume: Optional[Path]  # the checkpoint to continue from, or None


@contextmanager
def run(train: TrainConfig, out: Path, resume: Optional[str]) -> Iterator[Run]:
    """Set a run up; on leaving, leave torchrun's process group (all ranks together). Nested runs (a
    soup's parts) share the outer run's group."""
    device = resolve_device(train.device)
    joined = not torch.distributed.is_available() or not torch.distributed.is_initialized()
    info = init_distributed(device)
    try:
        precision = resolve_precision(train.precision, device)
        try:
            resume_path = ckpt.resolve_resume(resume, out / "checkpoints")
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from None
        yield Run(device, info, precision, resume_path)
    finally:
        if joined:
            shutdown(info)


def seed_model(train: TrainConfig) -> None:
    """Before building the model: the same initial weights on every rank and in every run of a seed."""
    torch.manual_seed(train.seed)


def seed_training(train: TrainConfig, info: DistInfo) -> None:
    """Before the loop: a stream per rank for masks and dropout."""
    torch.manual_seed(train.seed + 1 + info.rank)


def reload_best(model: nn.Module, train: TrainConfig, out: Path) -> Optional[int]:
    """With early stopping, load the best checkpoint's weights into ``model``; returns its step."""
    best = ckpt.best_step(out / "checkpoints")
    if train.early_stopping.patience is None or best is None:
        return None
    load_model(model, str(ckpt.step_dir(out / "checkpoints", best) / "model.safetensors"))
    return best
