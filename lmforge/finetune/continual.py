"""Continual learning: fine-tune a classifier on a new task without forgetting an earlier one.

Class-incremental: the new head covers the earlier task's labels and the new ones (a classifier of the
earlier task, as ``init_from``, keeps its rows for its own labels), so one model answers both. Two
remedies, alone or together:
- rehearsal (experience replay): a seeded sample of the earlier task's train split joins every epoch,
  and its validation split joins validation, so early stopping sees forgetting too;
- EWC (Kirkpatrick et al. 2017): sum_i F_i (theta_i - theta*_i)^2 / 2 with theta* the starting weights
  and F their (empirical, diagonal) Fisher information on the earlier task's examples: weights that
  mattered for it are held in place.
"""

from __future__ import annotations

import random
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.data.examples import read_classification
from lmforge.data.prepared import check_prepared
from lmforge.finetune.config import ContinualConfig

__all__ = ["EWCPenalty", "rehearsal_examples"]


def rehearsal_examples(config: ContinualConfig, split: str, text_field: str, label_field: str
                       ) -> tuple[tuple[list[str], list[Optional[str]], list[str]], set[str]]:
    """(a seeded sample of the earlier task's ``split`` as texts, no pairs, labels; every label of that
    split). The sample: ``rehearsal_size`` of train, a quarter of that (at least one, unless 0) of
    validation. The labels join the head whatever the sample's size."""
    assert config.rehearsal is not None
    check_prepared(config.rehearsal)
    texts, _, labels = read_classification(config.rehearsal, split, text_field, None, label_field)
    n = config.rehearsal_size if split == "train" else -(-config.rehearsal_size // 4)
    keep = sorted(random.Random(0).sample(range(len(texts)), min(n, len(texts))))
    return ([texts[i] for i in keep], [None] * len(keep), [labels[i] for i in keep]), set(labels)


class EWCPenalty:
    """``()`` -> sum_i F_i (theta_i - theta*_i)^2 / 2 over the trainable parameters, F estimated once
    from per-batch squared gradients of the cross-entropy on the earlier task's batches."""

    def __init__(self, model: nn.Module, batches: Any, weight: float) -> None:
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        was_training = model.training
        model.eval()  # the Fisher of the model as it is, without dropout's noise
        count = 0
        for batch in batches:
            model.zero_grad(set_to_none=True)
            logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # (B, K)
            F.cross_entropy(logits.float(), batch["labels"]).backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach() ** 2
            count += 1
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        self.params = params
        self.fisher = {n: f / max(count, 1) for n, f in fisher.items()}
        self.anchor = {n: p.detach().clone() for n, p in params.items()}
        self.weight = weight

    def __call__(self) -> Tensor:
        device = next(iter(self.params.values())).device
        if next(iter(self.anchor.values())).device != device:  # the loop moved the model after we were built
            self.anchor = {n: a.to(device) for n, a in self.anchor.items()}
            self.fisher = {n: f.to(device) for n, f in self.fisher.items()}
        total = sum(((self.fisher[n] * (p - self.anchor[n]) ** 2).sum() for n, p in self.params.items()),
                    torch.zeros((), device=device))
        return self.weight * total / 2
