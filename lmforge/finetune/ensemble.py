"""Weight averaging: the checkpoints of one run, or soups of several runs (prediction ensembles of
several runs are in lmforge.eval.scoring).

Averaging the weights of the last checkpoints of a run (Vaswani et al. 2017; "model soups" of one
trajectory) smooths the noise of the final steps at no inference cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from lmforge.config import ConfigError
from lmforge.train import checkpoint as ckpt

__all__ = ["average_checkpoints", "average_weights"]


def average_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    """Mean of the floating tensors of several safetensors files with the same names (integer buffers
    are taken from the last file): checkpoint averaging and model soups."""
    states = [load_file(str(f)) for f in files]
    keys = set(states[0])
    for path, state in zip(files[1:], states[1:]):
        if set(state) != keys:
            raise ConfigError(f"{path}: its tensors differ from {files[0]}'s; cannot average them")
    averaged = {}
    for key, newest in states[-1].items():
        if newest.is_floating_point():
            averaged[key] = torch.stack([s[key].double() for s in states]).mean(0).to(newest.dtype).contiguous()
        else:
            averaged[key] = newest
    return averaged


def average_checkpoints(run_dir: str | Path, last: int, out_file: Optional[str | Path] = None) -> dict[str, torch.Tensor]:
    """Mean of the ``last`` complete checkpoints' weights under RUN/checkpoints; floating tensors are
    averaged, integer buffers taken from the newest. Written to ``out_file`` (safetensors) when given."""
    found = ckpt.complete_checkpoints(Path(run_dir) / "checkpoints")
    if len(found) < last or last < 1:
        raise ConfigError(f"{run_dir}/checkpoints: {len(found)} complete checkpoints, cannot average the last {last}")
    averaged = average_weights([p / "model.safetensors" for p in found[-last:]])
    if out_file is not None:
        save_file(averaged, str(out_file))
    return averaged
