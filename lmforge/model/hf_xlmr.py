"""lmforge's pre-LN encoders <-> Hugging Face XLM-RoBERTa-XL (`xlm-roberta-xl`), the native
`transformers` architecture that computes what they compute: learned positions and token types added
with no embedding LayerNorm, LayerNorm before attention and before the feed-forward block, one final
LayerNorm after the last block (`roberta-prelayernorm` normalises the embeddings as well, so it
cannot). Two differences are only of naming or layout:

- positions: RoBERTa numbers real tokens from ``pad_token_id + 1`` (padding gets the pad row), so our
  table (P, C) sits at rows pad+1 .. pad+P of theirs (P + pad + 1, C); the other rows are zero;
- q, k and v are three Linears, ours one fused ``qkv``.

Heads: the MLM head (dense, GELU, LayerNorm, tied decoder + bias) is RoBERTa's ``lm_head``; a
first-token classifier with BERT's tanh pooler is RoBERTa's classification head (dense + tanh +
out_proj); tagging is ``classifier``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from lmforge.config import ConfigError

MODEL_TYPE = "xlm-roberta-xl"
# architecture -> (our pretraining heads, task)
XLMR_ARCHS: dict[str, tuple[tuple[str, ...], Optional[str]]] = {
    "XLMRobertaXLModel": ((), None),
    "XLMRobertaXLForMaskedLM": (("mlm",), None),
    "XLMRobertaXLForSequenceClassification": ((), "classification"),
    "XLMRobertaXLForTokenClassification": ((), "tagging"),
}
_LAYER = {"norm1": "attention.self_attn_layer_norm", "attn.proj": "attention.output.dense", "norm2": "LayerNorm",
          "mlp.fc": "intermediate.dense", "mlp.proj": "output.dense"}
_KINDS = ("weight", "bias")
_TIED = ("lm_head.decoder.bias",)  # RoBERTa's decoder bias is lm_head.bias under a second name


def xlmr_names(n_layers: int, heads: tuple[str, ...], task: Optional[str]) -> dict[str, str]:
    """Our name -> theirs (with the ``roberta.`` prefix of the head models) for every one-to-one tensor."""
    names = {"backbone.embed.tokens.weight": "roberta.embeddings.word_embeddings.weight",
             "backbone.final_norm.weight": "roberta.encoder.LayerNorm.weight",
             "backbone.final_norm.bias": "roberta.encoder.LayerNorm.bias"}
    for i in range(n_layers):
        for ours, theirs in _LAYER.items():
            for kind in _KINDS:
                names[f"backbone.blocks.{i}.{ours}.{kind}"] = f"roberta.encoder.layer.{i}.{theirs}.{kind}"
    if "mlm" in heads:
        names.update({"mlm.transform.weight": "lm_head.dense.weight", "mlm.transform.bias": "lm_head.dense.bias",
                      "mlm.norm.weight": "lm_head.layer_norm.weight", "mlm.norm.bias": "lm_head.layer_norm.bias",
                      "mlm.bias": "lm_head.bias", "mlm.decoder.weight": "lm_head.decoder.weight"})
    if task == "classification":
        names.update({f"head.pooler.{k}": f"classifier.dense.{k}" for k in _KINDS})
        names.update({f"head.classifier.{k}": f"classifier.out_proj.{k}" for k in _KINDS})
    elif task == "tagging":
        names.update({f"head.classifier.{k}": f"classifier.{k}" for k in _KINDS})
    return names


def _qkv(i: int, kind: str) -> list[str]:
    return [f"roberta.encoder.layer.{i}.attention.self.{p}.{kind}" for p in ("query", "key", "value")]


def lmforge_to_xlmr(state: dict[str, Tensor], n_layers: int, heads: tuple[str, ...], task: Optional[str],
                    pad_id: int, prefix: bool = True) -> dict[str, Tensor]:
    """Our state dict -> XLM-RoBERTa-XL's; ``prefix=False`` gives XLMRobertaXLModel's names (no ``roberta.``)."""
    out = {theirs: state[ours] for ours, theirs in xlmr_names(n_layers, heads, task).items() if ours in state}
    for i in range(n_layers):
        for kind in _KINDS:
            for name, t in zip(_qkv(i, kind), state[f"backbone.blocks.{i}.attn.qkv.{kind}"].chunk(3)):
                out[name] = t
    table = state["backbone.embed.positions.weight"]  # (P, C)
    positions = torch.zeros(table.shape[0] + pad_id + 1, table.shape[1], dtype=table.dtype)
    positions[pad_id + 1:] = table
    out["roberta.embeddings.position_embeddings.weight"] = positions
    types = state.get("backbone.embed.types.weight")  # none: one zero row, as if absent
    out["roberta.embeddings.token_type_embeddings.weight"] = types if types is not None else torch.zeros_like(table[:1])
    if not prefix:
        out = {k.removeprefix("roberta."): v for k, v in out.items()}
    return {k: v.contiguous() for k, v in out.items()}


def xlmr_to_lmforge(hf: dict[str, Tensor], n_layers: int, heads: tuple[str, ...], task: Optional[str],
                    pad_id: int) -> tuple[dict[str, Tensor], dict[str, str]]:
    """XLM-RoBERTa-XL's state dict (with or without ``roberta.``) -> (ours, our name -> theirs)."""
    hf = {k if k.startswith(("roberta.", "lm_head.", "classifier.")) else f"roberta.{k}": v for k, v in hf.items()}
    out: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    for ours, theirs in xlmr_names(n_layers, heads, task).items():
        sources[ours] = theirs
        if theirs in hf:
            out[ours] = hf[theirs]
    for i in range(n_layers):
        for kind in _KINDS:
            parts = _qkv(i, kind)
            missing = [p for p in parts if p not in hf]
            if missing:
                raise ConfigError(f"missing tensor {missing[0]}")
            ours = f"backbone.blocks.{i}.attn.qkv.{kind}"
            out[ours], sources[ours] = torch.cat([hf[p] for p in parts]), parts[0].replace("query", "{query,key,value}")
    for ours, theirs in (("backbone.embed.positions.weight", "roberta.embeddings.position_embeddings.weight"),
                         ("backbone.embed.types.weight", "roberta.embeddings.token_type_embeddings.weight")):
        if theirs not in hf:
            raise ConfigError(f"missing tensor {theirs}")
        sources[ours] = theirs
    out["backbone.embed.positions.weight"] = hf["roberta.embeddings.position_embeddings.weight"][pad_id + 1:]
    out["backbone.embed.types.weight"] = hf["roberta.embeddings.token_type_embeddings.weight"]
    return out, sources


def known_names(n_layers: int, heads: tuple[str, ...], task: Optional[str]) -> set[str]:
    """Every tensor name an XLM-RoBERTa-XL checkpoint of this shape may hold (for unexpected-tensor errors)."""
    names = set(xlmr_names(n_layers, heads, task).values()) | set(_TIED)
    names |= {n for i in range(n_layers) for kind in _KINDS for n in _qkv(i, kind)}
    return names | {"roberta.embeddings.position_embeddings.weight", "roberta.embeddings.token_type_embeddings.weight"}
