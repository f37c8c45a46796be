"""Knowledge distillation inside fine-tuning: a fine-tuned teacher's soft labels on the student's batches.

The student is whatever `lmforge finetune` builds (a smaller pretrained model, a pruned one, or one
from scratch); the teacher runs forward only, in eval mode, on the same encoded batch, so both must
share the tokenizer, the task and the label order. The soft loss is Hinton et al.'s (2015)
``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, summed over the labelled units like the
cross-entropy it is mixed with (``(1 - alpha) * CE + alpha * soft``), so the loop's division by the unit
count gives the per-unit mean of both.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor

from lmforge.config import ConfigError
from lmforge.data.prepared import check_prepared, iter_numbered, split_file
from lmforge.finetune.config import DistillConfig
from lmforge.model.heads import TaskModel
from lmforge.model.modeldir import load_model_dir
from lmforge.train.objectives import IGNORE

__all__ = ["Teacher", "load_teacher", "read_unlabelled"]


class Teacher:
    def __init__(self, model: TaskModel, temperature: float, alpha: float) -> None:
        self.model = model.eval().requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha

    def soft_loss(self, student_logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Summed T^2 * KL over the labelled units; student_logits (B, K) or (B, T, K)."""
        device = student_logits.device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        with torch.no_grad():
            teacher_logits = self.model.task_logits(batch["input_ids"], batch.get("attention_mask"),
                                                    batch.get("token_type_ids"))
        s, t = student_logits.float(), teacher_logits.float()
        if s.dim() == 3:  # tagging: the units that carry a label, (N, K)
            keep = batch["labels"] != IGNORE
            s, t = s[keep], t[keep]
        T = self.temperature
        kl = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True, reduction="sum")
        return kl * T * T

    def mix(self, hard_sum: Tensor, student_logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """(1 - alpha) * the labels' summed cross-entropy + alpha * the summed soft loss."""
        return (1 - self.alpha) * hard_sum + self.alpha * self.soft_loss(student_logits, batch)


def load_teacher(config: DistillConfig, task: str, labels: list[str], tokenizer_file: Path,
                 max_length: int, template: str | None = None) -> Teacher:
    """The teacher of ``config.teacher``, checked against the student's task, labels, tokenizer and
    sequence length before any training starts (each mismatch is one line naming both sides)."""
    where = f"distill.teacher={config.teacher}"
    loaded = load_model_dir(str(config.teacher))
    model = loaded.model
    if model.task != task:
        raise ConfigError(f"{where}: the teacher is a {model.task or 'pretrained (no task)'} model; the student "
                          f"fine-tunes {task}")
    if list(model.labels) != list(labels):
        raise ConfigError(f"{where}: the teacher's labels {model.labels} differ from the training split's {labels}")
    if loaded.tokenizer is None:
        raise ConfigError(f"{where}: no tokenizer.json; the teacher must read the student's token ids")
    ours = Tokenizer.from_file(str(tokenizer_file)).get_vocab()
    theirs = Tokenizer.from_str(loaded.tokenizer.json_text).get_vocab()
    if ours != theirs:
        raise ConfigError(f"{where}: its tokenizer differs from the student's ({tokenizer_file}: {len(ours)} vs "
                          f"{len(theirs)} tokens); distillation feeds both the same token ids")
    theirs_template = (loaded.config.get("prompt") or {}).get("template")
    if theirs_template != template:  # both read the same encoded batch: the same template, or none
        raise ConfigError(f"{where}: the teacher reads its inputs with prompt template {theirs_template!r}, the "
                          f"student with {template!r}; distillation feeds both the same token ids")
    if model.config.max_positions < max_length:
        raise ConfigError(f"{where}: the teacher reads at most {model.config.max_positions} positions; the "
                          f"student's batches are up to {max_length} long (lower data.max_length)")
    return Teacher(model, config.temperature, config.alpha)


def read_unlabelled(path: str, data: str, text_field: str, pair_field: str | None, key: str = "distill.unlabelled"
                    ) -> tuple[list[str], list[str | None], int]:
    """(texts, pairs, left out) of the train split of the prepared directory ``path``, labels ignored,
    without the texts that are also a validation or test text of ``data`` (learning the teacher's
    answers on them would leak the evaluation splits into training)."""
    check_prepared(path)
    held_out = {_key(row, text_field, pair_field) for split in ("validation", "test")
                for _, row in iter_numbered(split_file(data, split), text_field)}
    where = split_file(path, "train")
    texts, pairs, left_out = [], [], 0
    for number, row in iter_numbered(where, text_field):
        if row.get(text_field) is None or (pair_field is not None and row.get(pair_field) is None):
            need = text_field if pair_field is None else f"{text_field} and {pair_field}"
            raise ConfigError(f"{where}:{number}: {key} needs the field(s) {need}")
        key = _key(row, text_field, pair_field)
        if key in held_out:
            left_out += 1
            continue
        texts.append(key[0])
        pairs.append(key[1])
    return texts, pairs, left_out


def _key(row: dict, text_field: str, pair_field: str | None) -> tuple[str, str | None]:
    pair = row.get(pair_field) if pair_field else None
    return str(row.get(text_field)), None if pair is None else str(pair)
