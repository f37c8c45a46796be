"""The one lmforge transformer: a BERT-style encoder or a GPT-style decoder from the same blocks.

Math only. Precision, compilation, checkpointing and distribution are applied from outside.
Parameter names follow the checkpoints we convert (a name map, not a rewrite):

    ours                          BERT                                        GPT-2
    embed.tokens                  embeddings.word_embeddings                  wte
    embed.positions               embeddings.position_embeddings              wpe
    embed.types                   embeddings.token_type_embeddings            -
    embed.norm     (post-LN)      embeddings.LayerNorm                        -
    blocks.i.attn.qkv             attention.self.{query,key,value} (concat)   h.i.attn.c_attn (transposed)
    blocks.i.attn.proj            attention.output.dense                      h.i.attn.c_proj (transposed)
    blocks.i.norm1                attention.output.LayerNorm                  h.i.ln_1
    blocks.i.mlp.fc               intermediate.dense                          h.i.mlp.c_fc (transposed)
    blocks.i.mlp.proj             output.dense                                h.i.mlp.c_proj (transposed)
    blocks.i.norm2                output.LayerNorm                            h.i.ln_2
    final_norm     (pre-LN)       -                                           ln_f

Post-LN (BERT) normalises after each residual add and once after the embeddings; pre-LN (GPT-2)
normalises before each sub-layer and once at the end. That is the only difference between the two.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from lmforge.config import Section


class TransformerConfig(Section):
    vocab_size: int = Field(8000, gt=0)
    max_positions: int = Field(512, gt=0, description="Longest sequence; size of the learned position table.")
    n_layers: int = Field(4, gt=0)
    d_model: int = Field(256, gt=0)
    n_heads: int = Field(4, gt=0, description="Attention heads; the head size is d_model / n_heads.")
    kept_heads: Optional[int] = Field(
        None, gt=0, description="Heads each block still has after head pruning (None: n_heads); the head "
                                "size stays d_model / n_heads, so q, k, v are kept_heads * head size wide."
    )
    d_ff: int = Field(1024, gt=0)
    causal: bool = Field(False, description="False: bidirectional encoder (BERT). True: causal decoder (GPT).")
    norm: Literal["pre", "post"] = "post"
    activation: Literal["gelu", "gelu_tanh", "gated_gelu"] = Field(
        "gelu", description="gelu (BERT), gelu_tanh (GPT-2's approximation), gated_gelu (GEGLU)."
    )
    positions: Literal["learned", "rotary"] = "learned"
    rotary_base: float = Field(10000.0, gt=0)
    type_vocab_size: int = Field(2, ge=0, description="Segment (token type) embeddings; 0 for none (GPT).")
    dropout: float = Field(0.1, ge=0, lt=1)
    attn_dropout: float = Field(0.1, ge=0, lt=1)
    bias: bool = True
    tie_embeddings: bool = True
    norm_eps: float = Field(1e-12, gt=0)
    init: Literal["normal", "xavier", "kaiming"] = "normal"
    init_std: float = Field(0.02, gt=0, description="Standard deviation of the normal init (BERT: 0.02).")

    @model_validator(mode="after")
    def _check(self) -> "TransformerConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.positions == "rotary" and (self.d_model // self.n_heads) % 2:
            raise ValueError("rotary positions need an even head size (d_model / n_heads)")
        if self.kept_heads is not None and self.kept_heads > self.n_heads:
            raise ValueError(f"kept_heads={self.kept_heads} is more than n_heads={self.n_heads}")
        return self

    @property
    def head_size(self) -> int:
        return self.d_model // self.n_heads

    @property
    def heads(self) -> int:
        """The heads each block computes: n_heads, or fewer after head pruning."""
        return self.kept_heads or self.n_heads

    @property
    def attn_width(self) -> int:
        """Width of q, k, v and of the attention output projection's input: heads * head size."""
        return self.heads * self.head_size


def rotary_tables(seq_len: int, head_size: int, base: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos and sin tables, each (T, hs/2), for rotary position embeddings (Su et al. 2021)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, device=device, dtype=torch.float32) / head_size))
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)  # (T, hs/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (first half, second half) of each head's channels; x is (B, nh, T, hs)."""
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.type_as(x)


class KVCache:
    """Keys and values of the positions already seen, per layer, so that generation feeds only new tokens.

    Off unless passed to Transformer.forward; each layer's entry is (k, v), each (B, nh, T_past, hs).
    """

    def __init__(self, n_layers: int) -> None:
        self.layers: list[Optional[tuple[Tensor, Tensor]]] = [None] * n_layers

    @property
    def length(self) -> int:
        first = self.layers[0]
        return 0 if first is None else first[0].shape[2]


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_heads = cfg.heads
        self.width = cfg.attn_width  # W = nh * hs: d_model, or less after head pruning
        self.dropout = cfg.attn_dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * self.width, bias=cfg.bias)  # fused q, k, v
        self.proj = nn.Linear(self.width, cfg.d_model, bias=cfg.bias)
        # Optional module called as prefix(B) -> (keys, values), each (B, nh, P, hs): extra positions every
        # query may attend to (prefix tuning). None (the default) leaves attention exactly as it was.
        self.prefix: Optional[nn.Module] = None

    def forward(self, x: Tensor, mask: Optional[Tensor], is_causal: bool, rotary: Optional[tuple[Tensor, Tensor]],
                cache: Optional[KVCache] = None, layer: int = 0, n_queries: Optional[int] = None,
                query_index: Optional[Tensor] = None) -> Tensor:
        """``n_queries``: outputs for the first n positions only (keys and values still from all T).
        ``query_index`` (B, K): outputs for those positions of each row only, (B, K, C); not with a
        cache, a prefix or a causal mask."""
        if query_index is not None:
            return self._at(x, mask, rotary, query_index)
        B, T, _ = x.shape
        W = self.width
        q, k, v = self.qkv(x).split(W, dim=2)  # (B, T, W) each
        q, k, v = (t.view(B, T, self.n_heads, W // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if cache is not None:
            past = cache.layers[layer]
            if past is not None:
                k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)  # (B, nh, T_past+T, hs)
            cache.layers[layer] = (k, v)
        if self.prefix is not None:
            pk, pv = self.prefix(B)  # (B, nh, P, hs) each
            k, v = torch.cat([pk.to(k.dtype), k], dim=2), torch.cat([pv.to(v.dtype), v], dim=2)  # (B, nh, P+T, hs)
            mask, is_causal = prefix_mask(mask, is_causal, T, pk.shape[2], x.device), False
        if n_queries is not None:
            # the first rows of the mask; SDPA's and explicit_attention's causal masks are top-left
            # aligned, so query i still sees keys 0..i
            q = q[:, :, :n_queries]
            mask = mask[..., :n_queries, :] if mask is not None and mask.shape[-2] > 1 else mask
            T = q.shape[2]
        y = attention(q, k, v, mask, is_causal, self.dropout if self.training else 0.0)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, W))  # (B, T, W) -> (B, T, C)

    def _at(self, x: Tensor, mask: Optional[Tensor], rotary: Optional[tuple[Tensor, Tensor]], index: Tensor) -> Tensor:
        """Queries at ``index`` (B, K) only: keys and values from all T positions, the query projection
        and the output projection for K positions alone."""
        if self.prefix is not None:
            raise ValueError("query_index: not with a prefix")
        B, T, C = x.shape
        K, W, nh = index.shape[1], self.width, self.n_heads
        if type(self.qkv) is nn.Linear:
            weight, bias = self.qkv.weight, self.qkv.bias  # (3W, C), (3W,): q rows first
            kv = F.linear(x, weight[W:], None if bias is None else bias[W:])  # (B, T, 2W)
            xq = x.gather(1, index[..., None].expand(B, K, C))  # (B, K, C)
            q = F.linear(xq, weight[:W], None if bias is None else bias[:W])  # (B, K, W)
        else:  # a wrapped projection (LoRA): called whole, its queries picked after
            q, kv = self.qkv(x).split([W, 2 * W], dim=2)  # (B, T, W), (B, T, 2W)
            q = q.gather(1, index[..., None].expand(B, K, W))  # (B, K, W)
        q = q.view(B, K, nh, W // nh).transpose(1, 2)  # (B, nh, K, hs)
        k, v = (t.view(B, T, nh, W // nh).transpose(1, 2) for t in kv.split(W, dim=2))  # (B, nh, T, hs)
        if rotary is not None:
            cos, sin = rotary  # (T, hs/2): each query keeps its own position's rotation
            q = apply_rotary(q, cos[index][:, None], sin[index][:, None])
            k = apply_rotary(k, cos, sin)
        if mask is not None and mask.shape[-2] > 1:  # (B|1, 1, T, T): the rows of the chosen queries
            rows = mask.expand(B, *mask.shape[1:])
            mask = rows.gather(2, index[:, None, :, None].expand(B, rows.shape[1], K, T))  # (B, 1, K, T)
        y = attention(q, k, v, mask, False, self.dropout if self.training else 0.0)  # (B, nh, K, hs)
        return self.proj(y.transpose(1, 2).reshape(B, K, W))  # (B, K, C)


# Longest key length for which explicit attention beats SDPA's bf16 kernel on CPU (bench/attention_cpu.py).
EXPLICIT_ATTENTION_MAX_KEYS = 128


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], is_causal: bool, dropout_p: float) -> Tensor:
    """softmax(q k^T / sqrt(hs)) v for q (B, nh, T, hs), k and v (B, nh, S, hs) -> (B, nh, T, hs).

    `mask` (B|1, 1|nh, T, S) is boolean, True = may attend; `is_causal` aligns query i with key i. This is
    `F.scaled_dot_product_attention`, except in bf16/fp16 on a CPU: there PyTorch's fused kernel runs
    forward + backward 1.8-5x slower than `explicit_attention` for up to 128 keys (while in fp32 it is
    the faster of the two), so short sequences under autocast take the explicit path.
    """
    if (q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)
            and k.shape[-2] <= EXPLICIT_ATTENTION_MAX_KEYS):
        return explicit_attention(q, k, v, mask, is_causal, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], is_causal: bool,
                       dropout_p: float) -> Tensor:
    """What SDPA computes, as two matmuls in the inputs' dtype around an fp32 softmax (as autocast's)."""
    T, S = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1)  # (B, nh, T, S)
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32)) * q.shape[-1] ** -0.5
    if is_causal:
        causal = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()  # query i sees keys 0..i
        mask = causal if mask is None else mask & causal
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(dim=-1).to(v.dtype)
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p)
    return probs @ v  # (B, nh, T, hs)


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.gated = cfg.activation == "gated_gelu"
        self.approximate = "tanh" if cfg.activation == "gelu_tanh" else "none"
        # gated GELU (Shazeer 2020) computes gate and value in one matmul: fc is (2*d_ff, d_model)
        self.fc = nn.Linear(cfg.d_model, (2 if self.gated else 1) * cfg.d_ff, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)  # (B, T, d_ff) or (B, T, 2*d_ff)
        if self.gated:
            gate, value = h.chunk(2, dim=-1)
            h = F.gelu(gate) * value
        else:
            h = F.gelu(h, approximate=self.approximate)
        return self.proj(h)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.pre_norm = cfg.norm == "pre"
        self.attn = Attention(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Optional[Tensor], is_causal: bool, rotary: Optional[tuple[Tensor, Tensor]],
                cache: Optional[KVCache] = None, layer: int = 0, n_queries: Optional[int] = None,
                query_index: Optional[Tensor] = None) -> Tensor:
        """(B, T, C) -> (B, T, C), or (B, n_queries, C): the first positions' outputs only, or
        (B, K, C): the outputs at ``query_index`` (B, K) only."""
        if query_index is not None:
            rest = x.gather(1, query_index[..., None].expand(*query_index.shape, x.shape[-1]))  # (B, K, C)
        else:
            rest = x if n_queries is None else x[:, :n_queries]
        # positional, as the attention-map hook (eval/attention_maps.py) reads Attention's arguments
        extra = (cache, layer, n_queries, query_index)
        if self.pre_norm:
            x = rest + self.drop(self.attn(self.norm1(x), mask, is_causal, rotary, *extra))
            return x + self.drop(self.mlp(self.norm2(x)))
        x = self.norm1(rest + self.drop(self.attn(x, mask, is_causal, rotary, *extra)))
        return self.norm2(x + self.drop(self.mlp(x)))


class Embeddings(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.positions = nn.Embedding(cfg.max_positions, cfg.d_model) if cfg.positions == "learned" else None
        self.types = nn.Embedding(cfg.type_vocab_size, cfg.d_model) if cfg.type_vocab_size else None
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias) if cfg.norm == "post" else None
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor], offset: int = 0) -> Tensor:
        x = self.tokens(input_ids)  # (B, T, C)
        if self.positions is not None:
            pos = torch.arange(offset, offset + input_ids.shape[1], device=input_ids.device)
            x = x + self.positions(pos)  # (T, C) broadcast
        if self.types is not None:
            x = x + self.types(token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids))
        if self.norm is not None:
            x = self.norm(x)
        return self.drop(x)


class Transformer(nn.Module):
    """Token ids (B, T) -> hidden states (B, T, C). Heads live in lmforge.model.heads."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed = Embeddings(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias) if cfg.norm == "pre" else None
        init_weights(self, cfg)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        token_type_ids: Optional[Tensor] = None,
        cache: Optional[KVCache] = None,
        n_queries: Optional[int] = None,
        query_index: Optional[Tensor] = None,
    ) -> Tensor:
        """``n_queries``: the last block computes only the first n positions, all a first-token head
        reads: (B, n, C). Its feed-forward and output projection are 3/4 of a block's FLOPs, so a
        6-block encoder does 1/8 less work per step, with the same outputs at those positions.
        ``query_index`` (B, K) (see ``query_index``): the last block computes only those positions of
        each row, all an MLM head reads: (B, K, C), the same outputs there (not for causal models)."""
        if query_index is not None and (self.config.causal or cache is not None):
            raise ValueError("query_index is for encoders without a KV cache")
        B, T = input_ids.shape
        offset = cache.length if cache is not None else 0
        if offset + T > self.config.max_positions:
            raise ValueError(f"sequence length {offset + T} exceeds max_positions={self.config.max_positions}")
        if cache is not None:
            if attention_mask is not None:
                raise ValueError("the KV cache is for unpadded sequences: pass attention_mask=None")
            mask, is_causal = cached_bias(offset, T, self.config.causal, input_ids.device)
        else:
            mask, is_causal = attention_bias(attention_mask, self.config.causal, T)
        rotary = None
        if self.config.positions == "rotary":
            cos, sin = rotary_tables(offset + T, self.config.head_size, self.config.rotary_base, input_ids.device)
            rotary = cos[offset:], sin[offset:]  # (T, hs/2) each, for the new positions
        x = self.embed(input_ids, token_type_ids, offset)  # (B, T, C)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if i == last:
                x = block(x, mask, is_causal, rotary, cache, i, n_queries, query_index)
            else:
                x = block(x, mask, is_causal, rotary, cache, i)
        return self.final_norm(x) if self.final_norm is not None else x


def query_index(keep: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T) bool -> index (B, K) of each row's True positions in ascending order, K the most in any
    row, padded with other positions (computed, never read), and valid (B, K) bool: index[valid] lists
    the True positions in the row-major order ``hidden[keep]`` gives."""
    counts = keep.sum(dim=1)  # (B,)
    order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)  # True positions first, ascending
    K = int(counts.max()) if keep.numel() else 0
    valid = torch.arange(K, device=keep.device)[None, :] < counts[:, None]  # (B, K)
    return order[:, :K], valid


def attention_bias(attention_mask: Optional[Tensor], causal: bool, T: int) -> tuple[Optional[Tensor], bool]:
    """The boolean mask SDPA wants (True = may attend), or None with is_causal when nothing is padded.

    Padding masks keys only: a padded query still attends to real tokens, so no row is ever empty
    (an all-masked row would make SDPA return NaN). Each query may also always see itself, which keeps
    rows of an all-padding sequence finite; their outputs are never used.
    """
    if attention_mask is None:
        return None, causal
    keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    idx = torch.arange(T, device=attention_mask.device)
    eye = idx[:, None] == idx[None, :]  # (T, T); not torch.eye(bool), which ONNX Runtime cannot run
    if causal:
        allowed = keep & torch.ones(T, T, dtype=torch.bool, device=attention_mask.device).tril()
    else:
        allowed = keep
    return allowed | eye, False  # (B, 1, T, T)


def cached_bias(past: int, T: int, causal: bool, device: torch.device) -> tuple[Optional[Tensor], bool]:
    """Mask for T new queries against past + T keys: query i sees keys up to past + i."""
    if not causal or T == 1:
        return None, False  # one new token may see everything before it
    if past == 0:
        return None, True
    allowed = torch.ones(T, past + T, dtype=torch.bool, device=device).tril(diagonal=past)  # (T, past+T)
    return allowed, False


def prefix_mask(mask: Optional[Tensor], is_causal: bool, T: int, P: int, device: torch.device) -> Tensor:
    """Extend an attention mask (B|1, 1, T, T) or an implicit causal/full one by P always-visible prefix keys."""
    if mask is None:
        mask = torch.ones(T, T, dtype=torch.bool, device=device)
        mask = (mask.tril() if is_causal else mask)[None, None]  # (1, 1, T, T)
    visible = torch.ones(*mask.shape[:-1], P, dtype=torch.bool, device=device)  # (B|1, 1, T, P)
    return torch.cat([visible, mask], dim=-1)  # (B|1, 1, T, P+T)


def init_weights(module: nn.Module, cfg: TransformerConfig) -> None:
    """normal(0, init_std) as BERT and GPT-2 do, or Glorot/Xavier, or He/Kaiming; biases 0, norms 1."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            if cfg.init == "normal" or isinstance(sub, nn.Embedding):
                nn.init.normal_(sub.weight, mean=0.0, std=cfg.init_std)
            elif cfg.init == "xavier":
                nn.init.xavier_uniform_(sub.weight)
            else:
                nn.init.kaiming_normal_(sub.weight, nonlinearity="relu")  # He et al. 2015, fan_in
            if isinstance(sub, nn.Linear) and sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)


def count_parameters(module: nn.Module, exclude_embeddings: bool = False) -> int:
    """Distinct parameters (tied weights counted once)."""
    seen = {id(p): p for p in module.parameters()}
    if exclude_embeddings:
        for sub in module.modules():
            if isinstance(sub, nn.Embedding):
                seen.pop(id(sub.weight), None)
    return sum(p.numel() for p in seen.values())


def flops_per_token(cfg: TransformerConfig, seq_len: int, n_params: int) -> float:
    """Training FLOPs per token: 6N for the matmuls plus 12*L*T*W for attention scores (PaLM, app. B;
    W = d_model unless heads were pruned)."""
    return 6.0 * n_params + 12.0 * cfg.n_layers * seq_len * cfg.attn_width


__all__ = [
    "TransformerConfig",
    "Transformer",
    "KVCache",
    "attention_bias",
    "count_parameters",
    "flops_per_token",
    "init_weights",
    "prefix_mask",
]
