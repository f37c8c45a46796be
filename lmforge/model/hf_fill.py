"""Zeros that let every export map a model whose parts a transformers architecture always has: a zero
bias where lmforge's ``model.bias=false`` built none, and zero heads where head pruning removed some
(transformers 5 has one head count for every layer). Both add nothing to what the model computes."""

from __future__ import annotations

import torch
from torch import Tensor

from lmforge.model.transformer import TransformerConfig

__all__ = ["restore_pruned_heads", "zero_biases"]


def zero_biases(model: torch.nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` plus a zero bias for every backbone Linear and LayerNorm built without one
    (``model.bias=false``): the exported architectures all have them, and a zero bias adds nothing."""
    out = dict(state)
    for name, module in model.named_modules():
        norm_or_linear = isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm))
        if name.startswith("backbone.") and norm_or_linear and module.bias is None and f"{name}.bias" not in out:
            # (out features,) for a Linear, (width,) for a LayerNorm
            out[f"{name}.bias"] = torch.zeros(module.weight.shape[0], dtype=module.weight.dtype)
    return out


def restore_pruned_heads(state: dict[str, Tensor], c: TransformerConfig) -> dict[str, Tensor]:
    """``state`` with every block's pruned heads back as zeros: q, k, v rows and output-projection
    columns of ``n_heads - kept_heads`` heads after the kept ones. A head whose values and output
    columns are zero adds exactly nothing, whatever it attends to, so the model computes the same."""
    if c.heads == c.n_heads:
        return state
    out = dict(state)
    W, C = c.attn_width, c.d_model
    for i in range(c.n_layers):
        ours = f"backbone.blocks.{i}.attn."
        for kind in ("weight", "bias"):
            if ours + f"qkv.{kind}" in out:
                qkv = out[ours + f"qkv.{kind}"].reshape(3, W, *out[ours + f"qkv.{kind}"].shape[1:])  # (3, W[, C])
                full = qkv.new_zeros(3, C, *qkv.shape[2:])  # (3, C[, C]): [q; k; v], all heads
                full[:, :W] = qkv
                out[ours + f"qkv.{kind}"] = full.reshape(3 * C, *qkv.shape[2:])
        proj = out[ours + "proj.weight"]  # (C, W)
        out[ours + "proj.weight"] = torch.cat([proj, proj.new_zeros(C, C - W)], dim=1)  # (C, C)
    return out
