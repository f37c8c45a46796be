"""Structured pruning of feed-forward neurons: rank every block's hidden units by first-order
importance on the model's own labelled training data, and physically remove the least important
ones, the same number in every block, so the result is a smaller model directory (smaller matrices,
``model.d_ff`` reduced) that every command and the HF export take.

Importance of unit j of a block (Molchanov et al. 2017's Taylor criterion, which TextPruner also uses):
the sum over examples of |sum over positions of h_j * dL/dh_j|, with h the activation that enters
the block's output projection (after GELU, or the gated product) and L the example's cross-entropy on
its gold label(s): to first order, how much each example's loss moves if h_j is zeroed. Mask-only pruning
(``torch.nn.utils.prune``) leaves the matrices as big as they were (pytorch#36214); this does not.
Attention heads are not pruned: lmforge's attention width is d_model, which the blocks share.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lmforge.config import ConfigError
from lmforge.data.examples import read_classification, read_tagging
from lmforge.finetune.data import ExampleSource, chunk_units, encode_classification, encode_tagging, pad_id
from lmforge.model.heads import TaskModel
from lmforge.model.modeldir import build_model, check_and_load, load_model_dir, save_model_dir
from lmforge.model.peft import merge_lora
from lmforge.train.objectives import IGNORE

__all__ = ["ffn_importance", "prune_ffn"]


def _batches(model: TaskModel, config: dict[str, Any], tokenizer: Any, data: str, batch_size: int,
             limit: int) -> ExampleSource:
    d = config.get("data") or {}
    max_length = min(int(config.get("max_length") or model.config.max_positions), model.config.max_positions)
    tok = copy.deepcopy(tokenizer)
    label_to_id = model.label_to_id
    if model.task == "classification":
        texts, pairs, labels = read_classification(data, "train", d.get("text_field", "text"), d.get("pair_field"),
                                                   d.get("label_field", "label"))
        keep = [i for i, y in enumerate(labels) if y in label_to_id][:limit]
        enc = encode_classification(tok, [texts[i] for i in keep], [pairs[i] for i in keep],
                                    [labels[i] for i in keep], label_to_id, max_length, d.get("truncation", "head"))
    else:
        units, tags, _ = chunk_units(*read_tagging(data, "train"), max_length - 2)
        enc = encode_tagging(tok, units[:limit], tags[:limit], label_to_id, max_length)
    return ExampleSource(enc, batch_size, pad_id(tok), shuffle=False, drop_last=False)


def ffn_importance(model: TaskModel, batches: ExampleSource) -> list[Tensor]:
    """Per block, (d_ff,): sum over examples of |sum over positions of h * dL/dh| of the units entering
    the output projection (the examples' losses are summed, so each example's gradient is its own)."""
    blocks = list(model.backbone.blocks)
    captured: list[Tensor] = []
    scores = [torch.zeros(b.mlp.proj.in_features) for b in blocks]

    def keep_input(module: torch.nn.Module, args: tuple) -> None:
        args[0].retain_grad()
        captured.append(args[0])

    handles = [b.mlp.proj.register_forward_pre_hook(keep_input) for b in blocks]
    model.eval()  # no dropout: the importance of the function the model computes
    try:
        for batch in batches:
            captured.clear()
            logits = model.task_logits(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            labels = batch["labels"]
            flat = logits.reshape(-1, logits.shape[-1]) if logits.dim() == 3 else logits
            loss = F.cross_entropy(flat.float(), labels.reshape(-1), ignore_index=IGNORE, reduction="sum")
            model.zero_grad(set_to_none=True)
            loss.backward()
            for k, h in enumerate(captured):  # (B, T, d_ff) or (B, 1, d_ff) for a [CLS]-only last block
                scores[k] += (h * h.grad).detach().sum(dim=1).abs().sum(dim=0)  # (B, T, d_ff) -> (d_ff,)
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    return scores


def prune_ffn(model_dir: str | Path, data: str, out: str | Path, keep: float, batch_size: int = 32,
              limit: int = 2000) -> dict[str, Any]:
    """Write ``out``: ``model_dir`` with ``keep`` of each block's feed-forward units (the most important
    on up to ``limit`` training examples of ``data``); returns the sizes."""
    loaded = load_model_dir(model_dir)
    model = loaded.model
    if model.task is None:
        raise ConfigError(f"{model_dir}: pruning ranks units by the task's loss; it needs a fine-tuned model")
    if model.method in ("adapter", "prefix"):
        raise ConfigError(f"{model_dir}: method={model.method}: prune a full or LoRA fine-tune")
    if not 0 < keep <= 1:
        raise ConfigError(f"keep={keep}: the share of feed-forward units to keep, in (0, 1]")
    if loaded.tokenizer is None:
        raise ConfigError(f"{model_dir}: no tokenizer.json")
    merge_lora(model)  # a LoRA update is part of the weights being ranked
    model.method, model.method_settings = "full", {}
    cfg = model.config
    n_keep = max(1, round(keep * cfg.d_ff))
    scores = ffn_importance(model, _batches(model, loaded.config, loaded.tokenizer.tokenizer, data, batch_size, limit))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gated = cfg.activation == "gated_gelu"
    for k, score in enumerate(scores):
        idx = score.topk(n_keep).indices.sort().values  # the kept units, in their order
        rows = torch.cat([idx, idx + cfg.d_ff]) if gated else idx  # fc is (2*d_ff, C) when gated: gate, value
        prefix = f"backbone.blocks.{k}.mlp"
        state[f"{prefix}.fc.weight"] = state[f"{prefix}.fc.weight"][rows]
        if f"{prefix}.fc.bias" in state:
            state[f"{prefix}.fc.bias"] = state[f"{prefix}.fc.bias"][rows]
        state[f"{prefix}.proj.weight"] = state[f"{prefix}.proj.weight"][:, idx]
    config = {**loaded.config, "method": "full", "settings": {}}  # a LoRA update is merged in now
    config["model"] = {**config["model"], "d_ff": n_keep}
    config["pruned"] = {"from": str(model_dir), "ffn_units": [cfg.d_ff, n_keep], "data": str(data),
                        "criterion": "sum |h * dL/dh| on the train split"}
    pruned = build_model(config, f"{out}/config.json")
    check_and_load(pruned, state, f"{model_dir} (pruned)")
    save_model_dir(pruned, config, out, loaded.tokenizer)
    return {"d_ff": [cfg.d_ff, n_keep], "parameters": [sum(p.numel() for p in model.parameters()),
                                                       sum(p.numel() for p in pruned.parameters())]}
