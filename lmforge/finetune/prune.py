"""Structured pruning of attention heads and feed-forward units: rank every block's heads and hidden
units by first-order importance on the model's own labelled training data, and physically remove the
least important ones, the same number in every block, so the result is a smaller model directory
(smaller matrices; ``model.kept_heads`` and ``model.d_ff`` reduced) that every command and the HF export
take.

Importance (Molchanov et al. 2017's Taylor criterion, which TextPruner also uses; for heads it is
Michel et al. 2019's |dL/d gate| of a gate on each head's output): the sum over examples of
|sum over positions (and a head's channels) of h * dL/dh|, with h the activation entering the block's
output projection (FFN: after GELU or the gated product; attention: the concatenated head outputs) and L
the example's cross-entropy on its gold label(s): to first order, how much each example's loss moves if
the unit or head is zeroed. Both are ranked in one pass. Mask-only pruning (``torch.nn.utils.prune``)
leaves the matrices as big as they were (pytorch#36214); this does not. The top blocks can be dropped
too (``layers``), which with distillation from the original makes a shallower student.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lmforge.config import ConfigError
from lmforge.data.examples import read_classification, read_tagging
from lmforge.finetune.data import ExampleSource, chunk_units, encode_classification, encode_tagging, pad_id
from lmforge.model.heads import TaskModel
from lmforge.model.modeldir import build_model, check_and_load, load_model_dir, save_model_dir
from lmforge.model.peft import merge_lora
from lmforge.model.transformer import TransformerConfig
from lmforge.tokenize.prompt import PromptTemplate
from lmforge.train.objectives import IGNORE

__all__ = ["Importance", "importance", "prune_units"]


def _batches(model: TaskModel, config: dict[str, Any], tokenizer: Any, data: str, batch_size: int,
             limit: int) -> ExampleSource:
    d = config.get("data") or {}
    max_length = min(int(config.get("max_length") or model.config.max_positions), model.config.max_positions)
    tok = copy.deepcopy(tokenizer)
    label_to_id = model.label_to_id
    if model.task == "classification":
        kind = {"multi_label": "multi", "regression": "value"}.get(model.problem, "single")
        texts, pairs, labels = read_classification(data, "train", d.get("text_field", "text"), d.get("pair_field"),
                                                   d.get("label_field", "label"), kind)  # type: ignore[arg-type]
        known = {"single": lambda y: y in label_to_id, "multi": lambda y: set(y) <= set(label_to_id),
                 "value": lambda y: True}[kind]
        keep = [i for i, y in enumerate(labels) if known(y)][:limit]
        enc = encode_classification(tok, [texts[i] for i in keep], [pairs[i] for i in keep],
                                    [labels[i] for i in keep], label_to_id, max_length, config.get("truncation", "head"),
                                    model.problem, prompt=PromptTemplate(config["prompt"]["template"])
                                    if config.get("prompt") else None)
    else:
        units, tags, _ = chunk_units(*read_tagging(data, "train"), max_length - 2)
        enc = encode_tagging(tok, units[:limit], tags[:limit], label_to_id, max_length)
    return ExampleSource(enc, batch_size, pad_id(tok), shuffle=False, drop_last=False)


@dataclass
class Importance:
    ffn: list[Tensor]  # per block, (d_ff,)
    heads: list[Tensor]  # per block, (heads,)


def importance(model: TaskModel, batches: ExampleSource) -> Importance:
    """Per block: sum over examples of |sum over positions of h * dL/dh| of the feed-forward units and
    (summed over each head's channels too) of the heads, at the inputs of the two output projections
    (the examples' losses are summed, so each example's gradient is its own)."""
    blocks = list(model.backbone.blocks)
    captured: dict[str, list[Tensor]] = {"ffn": [], "heads": []}
    scores = Importance([torch.zeros(b.mlp.proj.in_features) for b in blocks],
                        [torch.zeros(b.attn.n_heads) for b in blocks])

    def keeper(kind: str):
        def keep_input(module: torch.nn.Module, args: tuple) -> None:
            args[0].retain_grad()
            captured[kind].append(args[0])
        return keep_input

    handles = [h for b in blocks for h in (b.mlp.proj.register_forward_pre_hook(keeper("ffn")),
                                           b.attn.proj.register_forward_pre_hook(keeper("heads")))]
    model.eval()  # no dropout: the importance of the function the model computes
    try:
        for batch in batches:
            captured["ffn"].clear()
            captured["heads"].clear()
            logits = model.task_logits(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            labels = batch["labels"]
            flat = logits.reshape(-1, logits.shape[-1]) if logits.dim() == 3 else logits
            loss = F.cross_entropy(flat.float(), labels.reshape(-1), ignore_index=IGNORE, reduction="sum")
            model.zero_grad(set_to_none=True)
            loss.backward()
            for k, h in enumerate(captured["ffn"]):  # (B, T, d_ff), or (B, 1, d_ff) for a [CLS]-only last block
                scores.ffn[k] += (h * h.grad).detach().sum(dim=1).abs().sum(dim=0)  # -> (d_ff,)
            for k, h in enumerate(captured["heads"]):  # (B, T, nh * hs)
                nh = blocks[k].attn.n_heads
                per_head = (h * h.grad).detach().reshape(*h.shape[:2], nh, -1)  # (B, T, nh, hs)
                scores.heads[k] += per_head.sum(dim=(1, 3)).abs().sum(dim=0)  # -> (nh,)
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    return scores


def _kept(score: Tensor, n: int) -> Tensor:
    return score.topk(n).indices.sort().values  # the n most important, in their order


def _lowest_blocks(model: TaskModel, config: dict[str, Any], n: int, where: str) -> TaskModel:
    """``model`` with its lowest ``n`` blocks only (the heads and norms above them kept)."""
    config = {**config, "model": {**config["model"], "n_layers": n}}
    keep = [f"backbone.blocks.{i}." for i in range(n)]
    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith("backbone.blocks.") or k.startswith(tuple(keep))}
    shallow = build_model(config, where)
    check_and_load(shallow, state, where)
    return shallow


def prune_units(model_dir: str | Path, data: Optional[str], out: str | Path, *, ffn_keep: float = 1.0, head_keep: float = 1.0,
                layers: Optional[int] = None, batch_size: int = 32, limit: int = 2000) -> dict[str, Any]:
    """Write ``out``: ``model_dir`` with its lowest ``layers`` blocks (all by default: dropping the top
    blocks is the best of the layer-dropping strategies Sajjad et al. 2023 compare, and the start of a
    distilled student), ``ffn_keep`` of each block's feed-forward units and ``head_keep`` of its
    attention heads (the most important on up to ``limit`` training examples of ``data``);
    returns the sizes before and after."""
    loaded = load_model_dir(model_dir)
    model = loaded.model
    if model.task is None:
        raise ConfigError(f"{model_dir}: pruning ranks units by the task's loss; it needs a fine-tuned model")
    if model.method in ("adapter", "prefix"):
        raise ConfigError(f"{model_dir}: method={model.method}: prune a full or LoRA fine-tune")
    for name, keep in (("ffn_keep", ffn_keep), ("head_keep", head_keep)):
        if not 0 < keep <= 1:
            raise ConfigError(f"{name}={keep}: the share to keep, in (0, 1]")
    cfg = model.config
    if layers is not None and not 0 < layers <= cfg.n_layers:
        raise ConfigError(f"layers={layers}: the blocks to keep, 1 to the model's {cfg.n_layers}")
    if loaded.tokenizer is None:
        raise ConfigError(f"{model_dir}: no tokenizer.json")
    merge_lora(model)  # a LoRA update is part of the weights being ranked
    model.method, model.method_settings = "full", {}
    config = {**loaded.config, "method": "full", "settings": {}}  # a LoRA update is merged in now
    n_layers = cfg.n_layers if layers is None else layers
    if n_layers < cfg.n_layers:  # before ranking: units and heads are ranked in the model that remains
        model = _lowest_blocks(model, config, n_layers, f"{model_dir} (lowest {n_layers} blocks)")
    n_ff, n_heads = max(1, round(ffn_keep * cfg.d_ff)), max(1, round(head_keep * cfg.heads))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if n_ff < cfg.d_ff or n_heads < cfg.heads:
        if not data:
            raise ConfigError("pruning heads or feed-forward units ranks them on labelled data: give data")
        batches = _batches(model, loaded.config, loaded.tokenizer.tokenizer, data, batch_size, limit)
        scores = importance(model, batches)
        for k in range(n_layers):
            _remove_units(state, f"backbone.blocks.{k}.", cfg, _kept(scores.ffn[k], n_ff),
                          _kept(scores.heads[k], n_heads))
    config["model"] = {**config["model"], "n_layers": n_layers, "d_ff": n_ff,
                       "kept_heads": n_heads if n_heads < cfg.n_heads else None}
    config["pruned"] = {"from": str(model_dir), "layers": [cfg.n_layers, n_layers], "ffn_units": [cfg.d_ff, n_ff],
                        "heads": [cfg.heads, n_heads], "data": str(data) if data else None,
                        "criterion": "lowest blocks; sum |h * dL/dh| on the train split"}
    pruned = build_model(config, f"{out}/config.json")
    check_and_load(pruned, state, f"{model_dir} (pruned)")
    save_model_dir(pruned, config, out, loaded.tokenizer)
    return {"layers": [cfg.n_layers, n_layers], "d_ff": [cfg.d_ff, n_ff], "heads": [cfg.heads, n_heads],
            "parameters": [sum(p.numel() for p in loaded.model.parameters()),
                           sum(p.numel() for p in pruned.parameters())]}


def _remove_units(state: dict[str, Tensor], block: str, cfg: TransformerConfig, units: Tensor,
                  heads: Tensor) -> None:
    """Keep, in ``state``, block ``block``'s feed-forward ``units`` and attention ``heads`` (sorted indices)."""
    rows = torch.cat([units, units + cfg.d_ff]) if cfg.activation == "gated_gelu" else units  # fc: gate; value
    hs, W = cfg.head_size, cfg.attn_width
    channels = (heads[:, None] * hs + torch.arange(hs)).reshape(-1)  # (n_heads * hs,) of the W
    qkv_rows = torch.cat([channels, channels + W, channels + 2 * W])  # qkv is [q; k; v], each W rows
    for layer, index, dim in (("mlp.fc", rows, 0), ("mlp.proj", units, 1),
                              ("attn.qkv", qkv_rows, 0), ("attn.proj", channels, 1)):
        for kind in ("weight", "bias") if dim == 0 else ("weight",):  # an output projection's bias stays
            name = f"{block}{layer}.{kind}"
            if name in state:
                state[name] = state[name].index_select(dim, index)
