"""Attention probabilities of every layer and head, recomputed from what each attention layer received
(its input, mask, rotary tables and any prefix keys): the model runs SDPA, which returns no weights.

``attention_received`` is the ``explain --method attention`` score; ``write_attention_png`` draws
the maps, one panel per layer and head.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from lmforge.model.heads import VerbalizerHead
from lmforge.model.transformer import apply_rotary, prefix_mask
from lmforge.serve.predictor import Predictor

__all__ = ["attention_maps", "attention_received", "write_attention_png"]


@torch.no_grad()
def attention_maps(predictor: Predictor, ids: Tensor, mask: Tensor) -> Tensor:
    """(n_layers, n_heads, T, T) attention probabilities of one input ids (1, T); with prefix tuning the
    prefix keys take their share of each row but are not drawn (rows then sum to less than 1)."""
    model = predictor.model
    maps: list[Tensor] = []

    def capture(attn: torch.nn.Module, args: tuple) -> None:
        x, attn_mask, is_causal, rotary = args[:4]  # Attention.forward(x, mask, is_causal, rotary, ...)
        B, T, _ = x.shape
        W = attn.width
        q, k, _ = attn.qkv(x).split(W, dim=2)  # (B, T, W) each
        q, k = (t.view(B, T, attn.n_heads, W // attn.n_heads).transpose(1, 2) for t in (q, k))  # (B, nh, T, hs)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        P = 0
        if attn.prefix is not None:
            pk, _ = attn.prefix(B)  # (B, nh, P, hs)
            P = pk.shape[2]
            k = torch.cat([pk.to(k.dtype), k], dim=2)
            attn_mask, is_causal = prefix_mask(attn_mask, is_causal, T, P, x.device), False
        scores = (q @ k.transpose(-2, -1)).float() * q.shape[-1] ** -0.5  # (B, nh, T, P+T)
        if is_causal:
            scores = scores.masked_fill(~torch.ones(T, T + P, dtype=torch.bool).tril(P), float("-inf"))
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        maps.append(scores.softmax(-1)[0, :, :, P:])  # (nh, T, T)

    handles = [block.attn.register_forward_pre_hook(capture) for block in model.backbone.blocks]
    try:
        model.backbone(ids, mask)  # every position of every block (no first-token shortcut)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(maps)  # (L, nh, T, T)


def attention_received(predictor: Predictor, ids: Tensor, mask: Tensor) -> Tensor:
    """(T,) attention each token receives in the last block, mean over heads, from the position(s)
    the classifier reads: the first token, the last real one, (mean pooling) every real one, or the
    template's [MASK] (a prompt-based classifier)."""
    last = attention_maps(predictor, ids, mask)[-1].mean(0)  # (T, T): query -> key
    head = getattr(predictor.model, "head", None)
    if isinstance(head, VerbalizerHead):
        return last[int((ids[0] == head.mask_token_id).int().argmax())]
    pooling = predictor.model.pooling
    if pooling == "first":
        return last[0]
    if pooling == "last":
        return last[int(mask[0].sum()) - 1]
    return last[mask[0].bool()].mean(0)


def write_attention_png(predictor: Predictor, text: str, out: str | Path) -> Path:
    """One heat map per layer (rows) and head (columns) of ``text`` as classify sees it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = torch.tensor([predictor.classify_input(text)[0]])  # (1, T): what classify sees
    maps = attention_maps(predictor, ids, torch.ones_like(ids))  # (L, H, T, T)
    L, H, T, _ = maps.shape
    fig, axes = plt.subplots(L, H, figsize=(2.2 * H + 1, 2.2 * L + 1), squeeze=False)
    for layer in range(L):
        for head in range(H):
            ax = axes[layer][head]
            ax.imshow(maps[layer, head].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=8)
            if head == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=8)
    fig.suptitle(f"attention, {T} tokens (rows: queries, columns: keys)", fontsize=9)
    path = Path(out)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
