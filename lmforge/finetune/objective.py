"""The fine-tuning objective for the one training loop: ``(model, batch) -> ObjectiveOutput``.

Cross-entropy over examples (classification) or labelled tokens (tagging), binary cross-entropy per
label (multi-label) or squared error (regression), with the regularisers
that only change the loss: label smoothing, R-Drop (Liang et al. 2021: two dropout passes, symmetric
KL between them), adversarial training on the token embeddings (FGM, Miyato et al. 2017; PGD,
Madry et al. 2018), and a teacher's soft labels (distillation: lmforge/finetune/distill.py). The
adversarial term is added to the clean loss, so the loop's single backward gives the clean plus the adversarial gradients, exactly what the usual two-backward recipe sums.
During evaluation (no grad) only the clean loss is computed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.model.adalora import orthogonal_penalty
from lmforge.finetune.config import RobustConfig
from lmforge.model.heads import TaskModel
from lmforge.train.objectives import IGNORE, ObjectiveOutput

if TYPE_CHECKING:
    from lmforge.finetune.distill import Teacher

__all__ = ["EmbeddingNoise", "FinetuneObjective", "task_logits"]


class EmbeddingNoise:
    """Forward hook on the token embedding: adds ``delta`` (B, T, C) to its output when one is set."""

    def __init__(self) -> None:
        self.delta: Optional[Tensor] = None

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        return output + self.delta.to(output.dtype) if self.delta is not None else output


def task_logits(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    return model(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))


def _select(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Logits and targets of the units that carry a label: (N, K), (N,). Tagging (B, T, K): the labelled
    tokens; classification (B, K): the labelled examples (unlabelled ones are there for a teacher)."""
    keep = labels != IGNORE  # (B, T) or (B,)
    return logits[keep], labels[keep]


def _per_example_unit(g: Tensor) -> Tensor:
    """g / ||g|| with the L2 norm over each example's (T, C) slice."""
    norm = g.flatten(1).norm(dim=1).clamp(min=1e-12)  # (B,)
    return g / norm[:, None, None]


def balanced_class_weights(labels: Sequence[Any], n_classes: int) -> Tensor:
    """(K,) N / (K * count_k) over the labelled units (ints, or per-token lists with IGNORE); a class
    absent from the train split gets weight 0 (nothing to weigh)."""
    flat = [y for row in labels for y in (row if isinstance(row, list) else [row]) if y != IGNORE]
    counts = torch.bincount(torch.tensor(flat, dtype=torch.long), minlength=n_classes).double()  # (K,)
    present = counts > 0
    weights = torch.zeros(n_classes, dtype=torch.float64)
    weights[present] = len(flat) / (int(present.sum()) * counts[present])
    return weights.float()


class FinetuneObjective:
    def __init__(self, model: TaskModel, robust: RobustConfig, orthogonal_weight: float = 0.0,
                 class_weights: Optional[Tensor] = None, focal_gamma: float = 0.0,
                 teacher: Optional["Teacher"] = None, penalty: Optional[Callable[[], Tensor]] = None) -> None:
        self.penalty = penalty  # a weight-space term (continual learning's EWC), per unit like the loss
        self.class_weights, self.focal_gamma = class_weights, focal_gamma
        self.teacher = teacher  # distillation: its soft labels join the training loss
        self.robust = robust
        self.orthogonal_weight = orthogonal_weight
        self.model = model
        self.noise = EmbeddingNoise()
        if robust.adversarial != "none":
            model.backbone.embed.tokens.register_forward_hook(self.noise)

    def loss(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(summed loss, unit count, correct count) for one forward pass. Multi-label: binary
        cross-entropy summed over labels, correct = examples whose whole label set is right at 0.5;
        regression: squared error of the (standardised) value, correct = 0 (no accuracy for a number)."""
        problem = self.model.problem
        if problem == "multi_label":  # logits (B, K), labels (B, K) multi-hot
            z = logits.float()
            loss = F.binary_cross_entropy_with_logits(z, labels, reduction="sum")
            exact = ((z >= 0) == (labels > 0.5)).all(-1).sum()
            return loss, torch.tensor(labels.shape[0], device=loss.device), exact
        if problem == "regression":  # logits (B, 1), labels (B,)
            loss = F.mse_loss(logits.float()[:, 0], labels, reduction="sum")
            return loss, torch.tensor(labels.shape[0], device=loss.device), torch.zeros((), device=loss.device)
        flat, target = _select(logits.float(), labels)  # (N, K), (N,)
        weight = self.class_weights.to(flat.device) if self.class_weights is not None else None
        smoothing = self.robust.label_smoothing
        if self.focal_gamma == 0:
            loss = F.cross_entropy(flat, target, weight=weight, reduction="sum", label_smoothing=smoothing)
        else:
            per_unit = F.cross_entropy(flat, target, weight=weight, reduction="none", label_smoothing=smoothing)  # (N,)
            p_target = flat.softmax(-1).gather(1, target[:, None])[:, 0]  # (N,)
            loss = ((1 - p_target) ** self.focal_gamma * per_unit).sum()
        return loss, torch.tensor(target.numel(), device=loss.device), (flat.argmax(-1) == target).sum()

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> ObjectiveOutput:
        labels = batch["labels"]
        training = torch.is_grad_enabled() and model.training
        r = self.robust
        if training and r.adversarial != "none":
            loss_sum, n, correct = self.adversarial(model, batch)
        else:
            logits = task_logits(model, batch)
            loss_sum, n, correct = self.loss(logits, labels)
            if training and r.rdrop_alpha > 0:
                loss_sum = self.rdrop(model, batch, logits, loss_sum)
        units = n
        if training and self.teacher is not None:
            loss_sum = self.teacher.mix(loss_sum, logits, batch)
            if logits.dim() == 2:  # every example has soft labels, unlabelled ones too: the mean is over all
                units = torch.tensor(logits.shape[0], device=loss_sum.device)
        if training and self.penalty is not None:
            loss_sum = loss_sum + self.penalty().to(loss_sum.device) * units
        if training and self.orthogonal_weight > 0:
            loss_sum = loss_sum + self.orthogonal_weight * orthogonal_penalty(self.model) * units
        # examples (classification) or labelled tokens (tagging) predicted right: val_acc
        # (multi-label: exact sets; regression logs no accuracy, its val_loss is the validation MSE)
        ratios = {} if self.model.problem == "regression" else {"acc": ("task_correct", "task_count")}
        return ObjectiveOutput(loss_sum, units, {"task_correct": correct, "task_count": n}, ratios)

    def rdrop(self, model: nn.Module, batch: dict[str, Tensor], logits: Tensor, loss_sum: Tensor) -> Tensor:
        """Mean of the two passes' CE + alpha * symmetric KL between their predictions."""
        labels = batch["labels"]
        second = task_logits(model, batch)
        loss2, _, _ = self.loss(second, labels)
        a, _ = _select(logits.float(), labels)
        b, _ = _select(second.float(), labels)
        la, lb = F.log_softmax(a, -1), F.log_softmax(b, -1)
        kl = (F.kl_div(la, lb, log_target=True, reduction="sum") + F.kl_div(lb, la, log_target=True, reduction="sum")) / 2
        return (loss_sum + loss2) / 2 + self.robust.rdrop_alpha * kl

    def adversarial_delta(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(delta, clean loss sum, count, correct). FGM: one step of size epsilon along the normalised
        gradient; PGD: ``pgd_steps`` steps of ``pgd_alpha``, projected back into the epsilon ball."""
        r = self.robust
        ids = batch["input_ids"]
        shape = (*ids.shape, self.model.config.d_model)  # (B, T, C)
        self.noise.delta = torch.zeros(shape, device=ids.device, requires_grad=True)
        clean, n, correct = self.loss(task_logits(model, batch), batch["labels"])
        (g,) = torch.autograd.grad(clean, self.noise.delta, retain_graph=True)  # clean graph stays for backward
        if r.adversarial == "fgm":
            delta = r.epsilon * _per_example_unit(g)
        else:
            delta = r.pgd_alpha * _per_example_unit(g)
            for _ in range(r.pgd_steps - 1):
                delta = self._project(delta, r.epsilon).detach().requires_grad_(True)
                self.noise.delta = delta
                loss_k, _, _ = self.loss(task_logits(model, batch), batch["labels"])
                (g,) = torch.autograd.grad(loss_k, delta)
                delta = delta + r.pgd_alpha * _per_example_unit(g)
            delta = self._project(delta, r.epsilon)
        self.noise.delta = None
        return delta.detach(), clean, n, correct

    def adversarial(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        delta, clean, n, correct = self.adversarial_delta(model, batch)
        self.noise.delta = delta
        try:
            adv, _, _ = self.loss(task_logits(model, batch), batch["labels"])
        finally:
            self.noise.delta = None
        return clean + adv, n, correct

    @staticmethod
    def _project(delta: Tensor, epsilon: float) -> Tensor:
        norm = delta.flatten(1).norm(dim=1).clamp(min=1e-12)  # (B,)
        return delta * (epsilon / norm).clamp(max=1.0)[:, None, None]
