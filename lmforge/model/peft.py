"""Parameter-efficient fine-tuning on lmforge modules: LoRA, bottleneck adapters, prefix tuning.

All three are our own code (see docs/finetuning.md for why not the `peft` library): each wraps or
attaches to the existing modules without renaming them, so a pretrained state dict still loads by
name, and marks its new tensors as the only trainable ones besides the task head.
AdaLoRA lives in lmforge.model.adalora; lmforge.model.methods builds any method by name.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.config import ConfigError
from lmforge.model.heads import TaskModel

__all__ = ["Adapter", "AdapterLinear", "LoRAEmbedding", "LoRALinear", "PrefixKV", "add_adapters", "add_lora",
           "add_prefix", "freeze_for_peft", "merge_lora", "peft_state", "trainable_summary"]


def target_linears(model: nn.Module, patterns: Iterable[str]) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, Linear) for every backbone Linear whose qualified name ends with a pattern."""
    patterns = tuple(patterns)
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.startswith("backbone.") and name.endswith(patterns):
            parent_name, _, attr = name.rpartition(".")
            found.append((model.get_submodule(parent_name), attr, module))
    if not found:
        raise ValueError(f"no Linear layer of the backbone matches target modules {list(patterns)}")
    return found


class LoRALinear(nn.Module):
    """y = base(x) + (dropout(x) A^T B^T) * alpha / r  (Hu et al. 2021). B starts at zero, so the
    wrapped layer starts as the pretrained one. The base keeps its name (``.base``)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        self.rank, self.scaling = rank, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and peft) initialise
        self.drop = nn.Dropout(dropout)

    def delta_weight(self) -> Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, in)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + F.linear(F.linear(self.drop(x), self.lora_A), self.lora_B) * self.scaling


class LoRAEmbedding(nn.Module):
    """tokens(ids) + A[ids] B * alpha / r: a low-rank update of the token embedding table (V, C).

    A small pretrained model leaves most of its capacity in the embedding table (16k x 128 of a
    2.9M-parameter encoder); a frozen table is what holds plain LoRA back on such models. A (V, r)
    starts at zero, so the table starts as pretrained, and only the rows of tokens seen get gradients.
    """

    def __init__(self, base: nn.Embedding, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.rank, self.scaling = rank, alpha / rank
        self.lora_A = nn.Parameter(torch.zeros(base.num_embeddings, rank))  # (V, r)
        self.lora_B = nn.Parameter(torch.randn(rank, base.embedding_dim) / math.sqrt(rank))  # (r, C)

    def delta_weight(self) -> Tensor:
        return (self.lora_A @ self.lora_B) * self.scaling  # (V, C)

    def forward(self, ids: Tensor) -> Tensor:
        return self.base(ids) + F.embedding(ids, self.lora_A) @ self.lora_B * self.scaling  # (B, T, C)


def add_lora(model: TaskModel, targets: list[str], rank: int, alpha: float, dropout: float,
             backend: str = "lmforge", embedding_rank: int = 0) -> int:
    """Wrap the target Linears in LoRA (and the token embedding, if ``embedding_rank``); returns how
    many layers were wrapped. ``backend="peft"`` lets the `peft` library do the Linears (its layers keep
    the Linear as ``.base_layer``)."""
    found = target_linears(model, targets)
    if embedding_rank:
        if backend == "peft":
            raise ConfigError("lora.embedding_rank needs lora.backend=lmforge")
        embed = model.backbone.embed
        embed.tokens = LoRAEmbedding(embed.tokens, embedding_rank, alpha * embedding_rank / rank)
    if backend == "peft":
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError:
            raise ConfigError("lora.backend=peft: the peft library is not installed (pip install lmforge[peft])") from None
        names = "|".join(re.escape(t) for t in targets)
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                            target_modules=rf"backbone\.blocks\.\d+\..*(?:{names})")
        inject_adapter_in_model(config, model)
        return len(found)
    for parent, attr, linear in found:
        setattr(parent, attr, LoRALinear(linear, rank, alpha, dropout))
    return len(found) + bool(embedding_rank)


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA update into its base weight and put the plain Linear back (for export):
    the merged model computes the same function with no extra matmuls. Returns the count merged."""
    merged = 0
    for name, module in list(model.named_modules()):
        if hasattr(module, "get_base_layer") and hasattr(module, "merge"):  # a peft LoRA layer
            module.merge()
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, module.get_base_layer())
            merged += 1
        elif isinstance(module, (LoRALinear, LoRAEmbedding)) or type(module).__name__ == "AdaLoRALinear":
            module.base.weight += module.delta_weight().to(module.base.weight.dtype)
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, module.base)
            merged += 1
    return merged


class Adapter(nn.Module):
    """Bottleneck adapter (Houlsby et al. 2019): x + up(act(down(x))); up starts at zero (identity)."""

    def __init__(self, d_model: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(d_model, bottleneck)
        self.up = nn.Linear(bottleneck, d_model)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(F.gelu(self.down(x)))


class AdapterLinear(nn.Module):
    """A sub-layer's output projection followed by an adapter, before dropout and the residual add."""

    def __init__(self, base: nn.Linear, bottleneck: int) -> None:
        super().__init__()
        self.base = base
        self.adapter = Adapter(base.out_features, bottleneck)

    def forward(self, x: Tensor) -> Tensor:
        return self.adapter(self.base(x))


def add_adapters(model: TaskModel, placement: Literal["houlsby", "pfeiffer"], bottleneck: int) -> int:
    """Houlsby: an adapter after the attention output and after the feed-forward output of every block;
    Pfeiffer (Pfeiffer et al. 2021): after the feed-forward output only (half the adapters, ~same quality)."""
    count = 0
    for block in model.backbone.blocks:
        if placement == "houlsby":
            block.attn.proj = AdapterLinear(block.attn.proj, bottleneck)
            count += 1
        block.mlp.proj = AdapterLinear(block.mlp.proj, bottleneck)
        count += 1
    return count


class PrefixKV(nn.Module):
    """Learned key/value prefixes of one attention layer (Li & Liang 2021): P extra positions that
    every query may attend to. Without reparameterisation: the tensors themselves train."""

    def __init__(self, n_heads: int, head_size: int, length: int, std: float = 0.02) -> None:
        super().__init__()
        self.key = nn.Parameter(torch.randn(n_heads, length, head_size) * std)  # (nh, P, hs)
        self.value = nn.Parameter(torch.randn(n_heads, length, head_size) * std)  # (nh, P, hs)

    def forward(self, batch: int) -> tuple[Tensor, Tensor]:
        return self.key.expand(batch, -1, -1, -1), self.value.expand(batch, -1, -1, -1)  # (B, nh, P, hs)


def add_prefix(model: TaskModel, length: int) -> int:
    cfg = model.config
    for block in model.backbone.blocks:
        block.attn.prefix = PrefixKV(cfg.heads, cfg.head_size, length, cfg.init_std)
    return len(model.backbone.blocks)


PEFT_MARKERS = ("lora_", "adapter.", "prefix.")


def is_peft_param(name: str) -> bool:
    return any(m in name for m in PEFT_MARKERS)


def plain_backbone_names(model: nn.Module) -> dict[str, str]:
    """Each backbone tensor of ``model`` that no PEFT method added -> its name in the same model without
    PEFT wrappers, which keep the wrapped Linear as ``.base`` (ours) or ``.base_layer`` (peft's):
    backbone.blocks.0.attn.qkv.base.weight -> backbone.blocks.0.attn.qkv.weight."""
    return {k: k.replace(".base_layer.", ".").replace(".base.", ".") for k in model.state_dict()
            if k.startswith("backbone.") and not is_peft_param(k)}


def freeze_for_peft(model: TaskModel) -> None:
    """Only the PEFT tensors and the task head train."""
    for name, p in model.named_parameters():
        p.requires_grad_(is_peft_param(name) or name.startswith("head."))


def peft_state(model: nn.Module) -> dict[str, Tensor]:
    """What a PEFT run saves: the new tensors, their buffers (AdaLoRA's masks) and the head."""
    state = model.state_dict()
    return {k: v.detach().contiguous() for k, v in state.items() if is_peft_param(k) or k.startswith("head.")}


def trainable_summary(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) distinct parameters."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

