"""Optimizers, parameter groups and learning-rate schedules (by steps or by wall-clock budget)."""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Optional

import torch
from torch import Tensor, nn

from lmforge.train.config import OptimConfig, ScheduleConfig

_LAYER = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def layer_index(name: str, n_layers: int) -> int:
    """0 for embeddings, i+1 for block i, n_layers+1 for everything after (final norm, heads)."""
    if ".embed." in f".{name}":
        return 0
    match = _LAYER.search(name)
    return int(match.group(1)) + 1 if match else n_layers + 1


def param_groups(model: nn.Module, cfg: OptimConfig, n_layers: int) -> list[dict[str, Any]]:
    """Weight decay only on matrices (never biases or norms); optional layer-wise LR decay (ELECTRA):
    the LR of layer l is ``lr * layer_decay ** (n_layers + 1 - l)``, so heads train fastest."""
    groups: dict[tuple[bool, int], dict[str, Any]] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue  # tied weights appear once
        seen.add(id(p))
        decay = p.ndim >= 2 and "norm" not in name
        layer = layer_index(name, n_layers) if cfg.layer_decay else 0
        scale = cfg.layer_decay ** (n_layers + 1 - layer) if cfg.layer_decay else 1.0
        group = groups.setdefault(
            (decay, layer),
            {
                "params": [],
                "weight_decay": cfg.weight_decay if decay else 0.0,
                "lr_scale": scale,
                "lr": cfg.lr * scale,
            },
        )
        group["params"].append(p)
    return list(groups.values())


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2019): Adam direction rescaled per tensor by ||w|| / ||update|| (trust ratio)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Optional[Tensor]:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.add_(update * trust, alpha=-group["lr"])
        return loss


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, n_layers: int, device: torch.device
) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg, n_layers)
    if cfg.name == "adamw":
        fused = cfg.fused if cfg.fused is not None else device.type in ("cuda", "cpu")
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)
    if cfg.name == "adafactor":
        return torch.optim.Adafactor(groups, lr=cfg.lr, beta2_decay=-0.8, eps=(None, 1e-3))
    if cfg.name == "lamb":
        return Lamb(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def lr_factor(cfg: ScheduleConfig, progress: float, warmup: float) -> float:
    """LR multiplier at ``progress`` in [0, 1] of training (steps or wall-clock); ``warmup`` a fraction."""
    progress = min(max(progress, 0.0), 1.0)
    floor = cfg.min_lr_ratio
    if cfg.kind == "onecycle":
        # Smith & Topin 2019 as in torch's OneCycleLR: cosine up from peak/25 over the warmup, then
        # cosine down to peak/1e4 (or the configured floor)
        rise = max(warmup, 1e-8)
        if progress < rise:
            return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * progress / rise)) / 2
        end = floor or 1e-4
        return end + (1 - end) * (1 + math.cos(math.pi * (progress - rise) / max(1 - rise, 1e-8))) / 2
    if progress < warmup:
        return progress / warmup
    if cfg.kind == "constant":
        return 1.0
    rest = (progress - warmup) / max(1.0 - warmup, 1e-8)  # 0 -> 1 after warmup
    if cfg.kind == "linear":
        return 1.0 - (1.0 - floor) * rest
    if cfg.kind == "cosine":
        return floor + (1.0 - floor) * (1 + math.cos(math.pi * rest)) / 2
    # wsd (warmup-stable-decay, Hu et al. 2024): flat, then linear decay over the last decay_fraction
    decay_start = 1.0 - cfg.decay_fraction
    if progress < decay_start:
        return 1.0
    return 1.0 - (1.0 - floor) * (progress - decay_start) / cfg.decay_fraction


class Schedule:
    """Sets each group's LR from training progress: ``step / steps`` or ``elapsed / budget``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        cfg: ScheduleConfig,
        base_lr: float,
        steps: int,
        budget_s: Optional[float] = None,
    ) -> None:
        self.optimizer, self.cfg, self.base_lr = optimizer, cfg, base_lr
        self.steps, self.budget_s = steps, budget_s
        if cfg.warmup_steps is not None and budget_s is None:
            self.warmup = cfg.warmup_steps / steps
        else:
            self.warmup = cfg.warmup

    def progress(self, step: int, elapsed_s: float) -> float:
        if self.budget_s is not None:
            return elapsed_s / self.budget_s
        return step / self.steps

    def apply(self, step: int, elapsed_s: float) -> float:
        """Set the LR for the update that follows ``step`` completed steps; returns the peak-scaled LR."""
        lr = self.base_lr * lr_factor(self.cfg, self.progress(step, elapsed_s), self.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def done(self, step: int, elapsed_s: float) -> bool:
        return self.progress(step, elapsed_s) >= 1.0
