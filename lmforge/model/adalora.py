"""AdaLoRA (Zhang et al. 2023): LoRA in SVD form, P diag(lambda) Q, whose rank budget is moved each
step from unimportant to important matrices.

Importance of a triplet (column of P, lambda_i, row of Q) is the smoothed sensitivity |w * dL/dw|
times its uncertainty; ``RankAllocator.step`` (called by the training loop after every update, while
the gradients are still there) updates those statistics and zeroes the lambdas below the budget
of that step. The budget falls from ``init_rank`` to ``target_rank`` per matrix on a cubic schedule
between ``warmup_steps`` and ``total_steps - final_steps``, then the rank pattern is frozen.
The statistics are buffers of the model, so checkpoints carry them and a resumed run is exact.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmforge.model.peft import target_linears
from lmforge.model.heads import TaskModel

__all__ = ["AdaLoRALinear", "RankAllocator", "add_adalora", "orthogonal_penalty"]


class AdaLoRALinear(nn.Module):
    """y = base(x) + x (B diag(E) A)^T * alpha / r; A (r, in), E (r, 1), B (out, r)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        self.rank, self.scaling = rank, alpha / rank
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features) * 0.02)  # Q (r, in)
        self.lora_E = nn.Parameter(torch.zeros(rank, 1))  # singular values (r, 1): start as the base layer
        self.lora_B = nn.Parameter(torch.randn(base.out_features, rank) * 0.02)  # P (out, r)
        self.register_buffer("lora_rank_mask", torch.ones(rank))  # (r,) 1 = triplet kept
        for name in ("A", "E", "B"):  # importance EMA and uncertainty EMA per parameter entry
            shape = getattr(self, f"lora_{name}").shape
            self.register_buffer(f"lora_ipt_{name}", torch.zeros(shape))
            self.register_buffer(f"lora_unc_{name}", torch.zeros(shape))
        self.drop = nn.Dropout(dropout)

    def delta_weight(self) -> Tensor:
        return self.lora_B @ (self.lora_A * self.lora_E) * self.scaling  # (out, in)

    def forward(self, x: Tensor) -> Tensor:
        low = self.drop(x) @ (self.lora_A * self.lora_E).T  # (..., r)
        return self.base(x) + low @ self.lora_B.T * self.scaling


def add_adalora(model: TaskModel, targets: list[str], rank: int, alpha: float, dropout: float) -> list[AdaLoRALinear]:
    wrapped = []
    for parent, attr, linear in target_linears(model, targets):
        module = AdaLoRALinear(linear, rank, alpha, dropout)
        setattr(parent, attr, module)
        wrapped.append(module)
    return wrapped


def orthogonal_penalty(model: nn.Module) -> Tensor:
    """Mean over AdaLoRA matrices of ||A A^T - I||_F + ||B^T B - I||_F (keeps P and Q near orthogonal)."""
    terms = []
    for m in model.modules():
        if isinstance(m, AdaLoRALinear):
            eye = torch.eye(m.rank, device=m.lora_A.device)
            terms.append(torch.linalg.norm(m.lora_A @ m.lora_A.T - eye) + torch.linalg.norm(m.lora_B.T @ m.lora_B - eye))
    return torch.stack(terms).mean() if terms else torch.zeros(())


class RankAllocator:
    def __init__(self, model: nn.Module, target_rank: int, total_steps: int, warmup_steps: int, final_steps: int,
                 beta1: float = 0.85, beta2: float = 0.85) -> None:
        self.modules = [m for m in model.modules() if isinstance(m, AdaLoRALinear)]
        if not self.modules:
            raise ValueError("RankAllocator: the model has no AdaLoRA layers")
        self.init_budget = sum(m.rank for m in self.modules)
        self.target_budget = target_rank * len(self.modules)
        self.total, self.warmup, self.final = total_steps, warmup_steps, final_steps
        self.beta1, self.beta2 = beta1, beta2

    def budget(self, step: int) -> int:
        """Triplets kept after ``step``: the initial budget, then a cubic decrease, then the target."""
        if step <= self.warmup:
            return self.init_budget
        end = self.total - self.final
        if step >= end:
            return self.target_budget
        left = 1 - (step - self.warmup) / max(end - self.warmup, 1)
        return int((self.init_budget - self.target_budget) * left**3 + self.target_budget)

    def kept(self) -> int:
        return int(sum(m.lora_rank_mask.sum().item() for m in self.modules))

    @torch.no_grad()
    def _update_importance(self) -> None:
        for m in self.modules:
            for name in ("A", "E", "B"):
                p = getattr(m, f"lora_{name}")
                if p.grad is None:
                    continue
                ipt, unc = getattr(m, f"lora_ipt_{name}"), getattr(m, f"lora_unc_{name}")
                sensitivity = (p * p.grad).abs()
                ipt.mul_(self.beta1).add_(sensitivity, alpha=1 - self.beta1)
                unc.mul_(self.beta2).add_((sensitivity - ipt).abs(), alpha=1 - self.beta2)

    def _scores(self, m: AdaLoRALinear) -> Tensor:
        s = {n: getattr(m, f"lora_ipt_{n}") * getattr(m, f"lora_unc_{n}") for n in ("A", "E", "B")}
        return s["E"].squeeze(1) + s["A"].mean(1) + s["B"].mean(0)  # (r,)

    @torch.no_grad()
    def step(self, step: int) -> None:
        """Called after optimizer step ``step``: update importance, then mask down to this step's budget."""
        end = self.total - self.final
        if step <= end:
            self._update_importance()
            budget = self.budget(step)
            if step > self.warmup:
                scores = [self._scores(m) for m in self.modules]
                flat = torch.cat(scores)  # (sum r,)
                if budget < flat.numel():
                    threshold = torch.kthvalue(flat, flat.numel() - budget).values
                    for m, sc in zip(self.modules, scores):
                        m.lora_rank_mask.copy_((sc > threshold).float())
        for m in self.modules:  # pruned singular values stay zero (the frozen pattern after the schedule)
            m.lora_E.mul_(m.lora_rank_mask[:, None])
