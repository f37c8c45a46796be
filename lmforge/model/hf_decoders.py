"""lmforge's rotary decoders -> the native `transformers` decoders that compute what they compute.

Both are pre-LN with LayerNorm (weight and bias), rotary positions over the whole head (rotate-half,
as ours: ``partial_rotary_factor`` 1.0), sequential residuals and a final LayerNorm:

- **StableLM** (``stablelm``) for gated GELU: its MLP is ``down(act(gate(x)) * up(x))``, ours
  ``proj(gelu(g) * v)`` with ``g, v = fc(x).chunk(2)``, so ``gate_proj``/``up_proj`` are the two halves of
  our ``fc``. StableLM has no bias on the attention output or the feed-forward block, so only bias-free
  models (``model.bias=false``: configs/pretrain-gpt-tiny.yaml) map; their LayerNorm biases are zeros.
- **GPT-NeoX** (``gpt_neox``, ``use_parallel_residual`` false) for plain GELU: q, k and v are one
  Linear as ours, but laid out per head (``[q_h, k_h, v_h]`` for each head h) where ours is
  ``[q; k; v]``; biases everywhere (zeros where ours has none).

Decoders with learned positions are GPT-2 (lmforge/model/hf.py).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lmforge.model.transformer import TransformerConfig

_KINDS = ("weight", "bias")


def _rope(c: TransformerConfig) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": c.rotary_base, "partial_rotary_factor": 1.0}


def _config(c: TransformerConfig, specials: dict[str, int], arch: str, model_type: str, **own: Any) -> dict[str, Any]:
    """config.json keys both decoders spell alike (sequential residual, full-width rotary), plus ``own``."""
    return {"architectures": [arch], "model_type": model_type, "vocab_size": c.vocab_size, "hidden_size": c.d_model,
            "intermediate_size": c.d_ff, "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
            "max_position_embeddings": c.max_positions, "initializer_range": c.init_std,
            "layer_norm_eps": c.norm_eps, "tie_word_embeddings": c.tie_embeddings, "rope_parameters": _rope(c),
            "use_parallel_residual": False, "hidden_dropout": c.dropout, "attention_dropout": c.attn_dropout,
            "bos_token_id": specials.get("eos"), "eos_token_id": specials.get("eos"),
            "pad_token_id": specials.get("pad"), **own}


def stablelm_checkpoint(state: dict[str, Tensor], c: TransformerConfig, lm_head: bool,
                        specials: dict[str, int]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(config.json, tensors) of StableLmForCausalLM (``lm_head``) or StableLmModel, from our state dict
    with every bias present (zeros where the model has none)."""
    arch = "StableLmForCausalLM" if lm_head else "StableLmModel"
    hf = _config(c, specials, arch, "stablelm", num_key_value_heads=c.n_heads, hidden_act="gelu", use_qkv_bias=False,
                 qk_layernorm=False)
    out = {"model.embed_tokens.weight": state["backbone.embed.tokens.weight"]}
    for kind in _KINDS:
        out[f"model.norm.{kind}"] = state[f"backbone.final_norm.{kind}"]
    for i in range(c.n_layers):
        ours, theirs = f"backbone.blocks.{i}.", f"model.layers.{i}."
        for name, t in zip(("q_proj", "k_proj", "v_proj"), state[ours + "attn.qkv.weight"].chunk(3)):
            out[f"{theirs}self_attn.{name}.weight"] = t
        out[theirs + "self_attn.o_proj.weight"] = state[ours + "attn.proj.weight"]
        gate, up = state[ours + "mlp.fc.weight"].chunk(2)  # (d_ff, C) each: gelu(gate) * up
        out[theirs + "mlp.gate_proj.weight"], out[theirs + "mlp.up_proj.weight"] = gate, up
        out[theirs + "mlp.down_proj.weight"] = state[ours + "mlp.proj.weight"]
        for norm, name in (("norm1", "input_layernorm"), ("norm2", "post_attention_layernorm")):
            for kind in _KINDS:
                out[f"{theirs}{name}.{kind}"] = state[f"{ours}{norm}.{kind}"]
    return hf, _with_lm_head(out, state, lm_head, "lm_head.weight", "model.")


def gpt_neox_checkpoint(state: dict[str, Tensor], c: TransformerConfig, lm_head: bool,
                        specials: dict[str, int]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(config.json, tensors) of GPTNeoXForCausalLM (``lm_head``) or GPTNeoXModel, from our state dict
    with every bias present."""
    arch = "GPTNeoXForCausalLM" if lm_head else "GPTNeoXModel"
    act = "gelu" if c.activation == "gelu" else "gelu_pytorch_tanh"
    hf = _config(c, specials, arch, "gpt_neox", hidden_act=act, attention_bias=True)
    nh, hs = c.n_heads, c.head_size
    out = {"gpt_neox.embed_in.weight": state["backbone.embed.tokens.weight"]}
    for kind in _KINDS:
        out[f"gpt_neox.final_layer_norm.{kind}"] = state[f"backbone.final_norm.{kind}"]
    for i in range(c.n_layers):
        ours, theirs = f"backbone.blocks.{i}.", f"gpt_neox.layers.{i}."
        for kind in _KINDS:
            qkv = state[f"{ours}attn.qkv.{kind}"]  # (3C, C) or (3C,): [q; k; v], each head-major
            per_head = qkv.reshape(3, nh, hs, *qkv.shape[1:]).transpose(0, 1)  # (nh, 3, hs, ...)
            out[f"{theirs}attention.query_key_value.{kind}"] = per_head.reshape(qkv.shape)
            for mine, name in (("attn.proj", "attention.dense"), ("mlp.fc", "mlp.dense_h_to_4h"),
                               ("mlp.proj", "mlp.dense_4h_to_h"), ("norm1", "input_layernorm"),
                               ("norm2", "post_attention_layernorm")):
                out[f"{theirs}{name}.{kind}"] = state[f"{ours}{mine}.{kind}"]
    return hf, _with_lm_head(out, state, lm_head, "embed_out.weight", "gpt_neox.")


def _with_lm_head(out: dict[str, Tensor], state: dict[str, Tensor], lm_head: bool, head: str,
                  prefix: str) -> dict[str, Tensor]:
    """The causal LM's tensors (an untied LM head under ``head``), or the base model's (``prefix`` dropped)."""
    if lm_head and "lm.decoder.weight" in state:
        out[head] = state["lm.decoder.weight"]
    if not lm_head:
        out = {k.removeprefix(prefix): v for k, v in out.items()}
    return {k: v.contiguous() for k, v in out.items()}

