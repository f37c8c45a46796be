"""Hugging Face checkpoints in and out: BERT and GPT-2 directories <-> lmforge model directories.

Import reads config.json + model.safetensors (or pytorch_model.bin through torch.load(weights_only=True),
which refuses to run pickled code) + tokenizer.json or vocab.txt. Export writes config.json,
model.safetensors and tokenizer files that `transformers`' Auto classes load. Both are a name map
(see lmforge/model/transformer.py): BERT's q/k/v are concatenated into our fused qkv, GPT-2's Conv1D
weights are transposed; nothing else changes, so HF -> lmforge -> HF gives identical tensors.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from lmforge.config import ConfigError
from lmforge.model.heads import TaskModel, VerbalizerHead
from lmforge.model.hf_decoders import gpt_neox_checkpoint, stablelm_checkpoint
from lmforge.model.hf_fill import restore_pruned_heads, zero_biases
from lmforge.model.hf_xlmr import MODEL_TYPE as XLMR_MODEL_TYPE
from lmforge.model.hf_xlmr import XLMR_ARCHS, known_names, lmforge_to_xlmr, xlmr_to_lmforge
from lmforge.model.modeldir import (LoadedModel, atomic_directory, build_model, check_and_load, load_model_dir,
                                    model_dir_config, read_json, read_safetensors, save_model_dir)
from lmforge.model.peft import merge_lora
from lmforge.model.sentence_files import Dense, read_dense_head, write_sentence_files
from lmforge.tokenize.tokenizer import LoadedTokenizer, write_hf_tokenizer_files, load_tokenizer

# architecture -> (our pretraining heads, task, BERT pooler kept)
BERT_ARCHS: dict[str, tuple[tuple[str, ...], Optional[str], bool]] = {
    "BertModel": ((), None, True),
    "BertForMaskedLM": (("mlm",), None, False),
    "BertForPreTraining": (("mlm", "sentence"), None, False),  # its pooler is our sentence.pooler
    "BertForSequenceClassification": ((), "classification", True),
    "BertForTokenClassification": ((), "tagging", False),
}
GPT2_ARCHS: dict[str, tuple[str, ...]] = {"GPT2Model": (), "GPT2LMHeadModel": ("lm",)}
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
# buffers and tied copies that checkpoints carry but that hold no parameters of their own
_IGNORED_SUFFIXES = (".position_ids", ".attn.bias", ".attn.masked_bias")
_BERT_LAYER = {"attn.proj": "attention.output.dense", "norm1": "attention.output.LayerNorm",
               "mlp.fc": "intermediate.dense", "mlp.proj": "output.dense", "norm2": "output.LayerNorm"}
_GPT2_LAYER = {"attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "mlp.fc": "mlp.c_fc",
               "mlp.proj": "mlp.c_proj", "norm1": "ln_1", "norm2": "ln_2"}


# ----------------------------------------------------------------------------------------- name maps
def bert_names(n_layers: int, heads: tuple[str, ...], task: Optional[str], pooler: bool) -> dict[str, str]:
    """Our name -> BERT's (with the `bert.` prefix of the task models) for every one-to-one tensor."""
    names = {"backbone.embed.tokens.weight": "bert.embeddings.word_embeddings.weight",
             "backbone.embed.positions.weight": "bert.embeddings.position_embeddings.weight",
             "backbone.embed.types.weight": "bert.embeddings.token_type_embeddings.weight",
             "backbone.embed.norm.weight": "bert.embeddings.LayerNorm.weight",
             "backbone.embed.norm.bias": "bert.embeddings.LayerNorm.bias"}
    for i in range(n_layers):
        for ours, theirs in _BERT_LAYER.items():
            for kind in ("weight", "bias"):
                names[f"backbone.blocks.{i}.{ours}.{kind}"] = f"bert.encoder.layer.{i}.{theirs}.{kind}"
    kinds = ("weight", "bias")
    if "mlm" in heads:
        names.update({"mlm.transform.weight": "cls.predictions.transform.dense.weight",
                      "mlm.transform.bias": "cls.predictions.transform.dense.bias",
                      "mlm.norm.weight": "cls.predictions.transform.LayerNorm.weight",
                      "mlm.norm.bias": "cls.predictions.transform.LayerNorm.bias",
                      "mlm.bias": "cls.predictions.bias",
                      "mlm.decoder.weight": "cls.predictions.decoder.weight"})
    if "sentence" in heads:
        names.update({f"sentence.pooler.{k}": f"bert.pooler.dense.{k}" for k in kinds})
        names.update({f"sentence.classifier.{k}": f"cls.seq_relationship.{k}" for k in kinds})
    if pooler:  # a classifier's pooler is its head's; a bare encoder keeps BERT's as `pooler`
        ours = "head.pooler" if task == "classification" else "pooler"
        names.update({f"{ours}.{k}": f"bert.pooler.dense.{k}" for k in kinds})
    if task:
        names.update({f"head.classifier.{k}": f"classifier.{k}" for k in kinds})
    return names


def bert_to_lmforge(hf: dict[str, Tensor], n_layers: int, heads: tuple[str, ...] = ("mlm",),
                    task: Optional[str] = None, pooler: bool = False) -> tuple[dict[str, Tensor], dict[str, str]]:
    """BERT state dict (with or without the `bert.` prefix) -> (our tensors, our name -> BERT name)."""
    hf = {k if k.startswith(("bert.", "cls.", "classifier.")) else f"bert.{k}": v for k, v in hf.items()}
    out: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    for ours, theirs in bert_names(n_layers, heads, task, pooler).items():
        sources[ours] = theirs
        if theirs in hf:
            out[ours] = hf[theirs]
    for i in range(n_layers):
        src = f"bert.encoder.layer.{i}.attention.self."
        for kind in ("weight", "bias"):
            parts = [f"{src}{p}.{kind}" for p in ("query", "key", "value")]
            missing = [p for p in parts if p not in hf]
            if missing:
                raise ConfigError(f"missing tensor {missing[0]}")
            ours = f"backbone.blocks.{i}.attn.qkv.{kind}"
            out[ours], sources[ours] = torch.cat([hf[p] for p in parts]), f"{src}{{query,key,value}}.{kind}"
    return out, sources


def lmforge_to_bert(state: dict[str, Tensor], n_layers: int, heads: tuple[str, ...], task: Optional[str],
                    pooler: bool, prefix: bool = True) -> dict[str, Tensor]:
    """Inverse of bert_to_lmforge; prefix=False gives BertModel's names (no `bert.`)."""
    out: dict[str, Tensor] = {}
    for ours, theirs in bert_names(n_layers, heads, task, pooler).items():
        if ours in state:
            out[theirs] = state[ours]
    for i in range(n_layers):
        for kind in ("weight", "bias"):
            q, k, v = state[f"backbone.blocks.{i}.attn.qkv.{kind}"].chunk(3)
            for name, t in zip(("query", "key", "value"), (q, k, v)):
                out[f"bert.encoder.layer.{i}.attention.self.{name}.{kind}"] = t
    if not prefix:
        out = {k.removeprefix("bert."): v for k, v in out.items()}
    return {k: v.contiguous() for k, v in out.items()}


def gpt2_to_lmforge(hf: dict[str, Tensor], n_layers: int) -> tuple[dict[str, Tensor], dict[str, str]]:
    """GPT-2 state dict (GPT2Model or GPT2LMHeadModel names) -> (our tensors, our name -> GPT-2 name)."""
    hf = {k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}": v for k, v in hf.items()}
    names = {"backbone.embed.tokens.weight": "transformer.wte.weight",
             "backbone.embed.positions.weight": "transformer.wpe.weight",
             "backbone.final_norm.weight": "transformer.ln_f.weight",
             "backbone.final_norm.bias": "transformer.ln_f.bias", "lm.decoder.weight": "lm_head.weight"}
    out: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    for ours, theirs in names.items():
        sources[ours] = theirs
        if theirs in hf:
            out[ours] = hf[theirs]
    for i in range(n_layers):
        for ours, theirs in _GPT2_LAYER.items():
            for kind in ("weight", "bias"):
                name = f"transformer.h.{i}.{theirs}.{kind}"
                if name not in hf:
                    raise ConfigError(f"missing tensor {name}")
                w = hf[name]
                # Conv1D keeps (in, out): transpose weights to nn.Linear's (out, in); norms are vectors
                key = f"backbone.blocks.{i}.{ours}.{kind}"
                out[key] = w.t() if kind == "weight" and not ours.startswith("norm") else w
                sources[key] = name
    return out, sources


def lmforge_to_gpt2(state: dict[str, Tensor], n_layers: int, lm_head: bool) -> dict[str, Tensor]:
    out = {"transformer.wte.weight": state["backbone.embed.tokens.weight"],
           "transformer.wpe.weight": state["backbone.embed.positions.weight"],
           "transformer.ln_f.weight": state["backbone.final_norm.weight"],
           "transformer.ln_f.bias": state["backbone.final_norm.bias"]}
    if lm_head and "lm.decoder.weight" in state:
        out["lm_head.weight"] = state["lm.decoder.weight"]
    for i in range(n_layers):
        for ours, theirs in _GPT2_LAYER.items():
            for kind in ("weight", "bias"):
                w = state[f"backbone.blocks.{i}.{ours}.{kind}"]
                out[f"transformer.h.{i}.{theirs}.{kind}"] = w.t() if kind == "weight" and not ours.startswith("norm") else w
    if not lm_head:
        out = {k.removeprefix("transformer."): v for k, v in out.items()}
    return {k: v.contiguous() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------- import
def _read_weights(root: Path) -> tuple[dict[str, Tensor], str]:
    st, pt = root / "model.safetensors", root / "pytorch_model.bin"
    if st.is_file():
        return read_safetensors(st), str(st)
    if pt.is_file():
        try:  # weights_only: tensors and plain containers only; a pickle that wants to run code is refused
            state = torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises several types for a refused or broken file
            raise ConfigError(_weights_only_refusal(pt, exc)) from None
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise ConfigError(f"{pt}: expected a dict of tensors")
        return state, str(pt)
    raise ConfigError(f"{root}: no model.safetensors or pytorch_model.bin")


# torch's refusal text advises re-running with weights_only=False or allow-listing the global, i.e.
# letting the file run code; only the facts in it reach the user.
_TORCH_ADVICE = ("weights_only", "weights only", "safe_globals", "check the documentation", "please file an issue",
                 "this file can still be loaded")
_PICKLED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _weights_only_refusal(path: Path, exc: Exception) -> str:
    """One line naming ``path`` and why torch.load(weights_only=True) refused it."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    wanted = _PICKLED_GLOBAL.search(text)
    if wanted:  # the pickle imports a callable: loading it could run code
        return (f"{path}: refused: the pickle asks to import {wanted.group(1)}, so loading it could run code; "
                f"lmforge reads .bin weights only when they hold nothing but tensors: use the model's "
                f"model.safetensors instead")
    lines = [line.strip().removeprefix("WeightsUnpickler error:").strip() for line in text.splitlines()]
    facts = [line for line in lines if line and not any(a in line.lower() for a in _TORCH_ADVICE)]
    reason = facts[0].rstrip(".") if facts else type(exc).__name__
    return f"{path}: not a loadable PyTorch weights file ({reason})"


def _hf_tokenizer(root: Path) -> Optional[LoadedTokenizer]:
    if (root / "tokenizer.json").is_file():
        return load_tokenizer(root / "tokenizer.json")
    if (root / "vocab.txt").is_file():
        tc = root / "tokenizer_config.json"
        lower = bool(read_json(tc).get("do_lower_case", True)) if tc.is_file() else True
        return load_tokenizer(root / "vocab.txt", lowercase=lower)
    return None


def _get(hf: dict[str, Any], key: str, where: str, default: Any = ...) -> Any:
    if key in hf:
        return hf[key]
    if default is ...:
        raise ConfigError(f"{where}: missing key {key!r}")
    return default


def _dir_config_from_hf(hf: dict[str, Any], where: str) -> tuple[dict[str, Any], str]:
    """HF config.json -> (our config.json dict, architecture)."""
    archs = hf.get("architectures") or []
    arch = archs[0] if archs else {"bert": "BertModel", "gpt2": "GPT2Model", XLMR_MODEL_TYPE: "XLMRobertaXLModel"
                                   }.get(hf.get("model_type", ""), "?")
    supported = [*BERT_ARCHS, *XLMR_ARCHS, *GPT2_ARCHS]
    if arch not in supported:
        raise ConfigError(f"{where}: unsupported architecture {arch!r} (model_type {hf.get('model_type')!r}); "
                          f"supported: {', '.join(supported)}")
    if arch in BERT_ARCHS or arch in XLMR_ARCHS:
        family = "BERT" if arch in BERT_ARCHS else "XLM-RoBERTa-XL"
        act = _get(hf, "hidden_act", where, "gelu")
        if act not in _ACTIVATIONS or hf.get("position_embedding_type", "absolute") != "absolute" \
                or hf.get("is_decoder", False):
            raise ConfigError(f"{where}: unsupported {family} variant (hidden_act={act!r}, position_embedding_type="
                              f"{hf.get('position_embedding_type')!r}, is_decoder={hf.get('is_decoder', False)})")
        vocab, positions = _get(hf, "vocab_size", where), _get(hf, "max_position_embeddings", where)
        if family != "BERT":  # RoBERTa's rows start after the pad id (lmforge/model/hf_xlmr.py)
            positions -= int(_get(hf, "pad_token_id", where)) + 1
        model = dict(vocab_size=vocab, max_positions=positions,
                     n_layers=_get(hf, "num_hidden_layers", where), d_model=_get(hf, "hidden_size", where),
                     n_heads=_get(hf, "num_attention_heads", where), d_ff=_get(hf, "intermediate_size", where),
                     causal=False, norm="post" if family == "BERT" else "pre", activation=_ACTIVATIONS[act],
                     type_vocab_size=_get(hf, "type_vocab_size", where, 2),
                     dropout=hf.get("hidden_dropout_prob", 0.1), attn_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                     tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
                     norm_eps=hf.get("layer_norm_eps", 1e-12 if family == "BERT" else 1e-5),
                     init_std=hf.get("initializer_range", 0.02))
        heads, task, pooler = BERT_ARCHS[arch] if family == "BERT" else (*XLMR_ARCHS[arch], False)
        config: dict[str, Any] = {"heads": list(heads), "model": model, "source": {"hf_architecture": arch}}
        if task:
            config.update(task=task, labels=_labels(hf))
        problem = {v: k for k, v in _HF_PROBLEM.items()}.get(hf.get("problem_type") or "")
        if task == "classification" and problem:
            config["problem"] = problem
        if task == "classification":
            config.update(pooling="first", pooler=True)
        elif pooler:
            config["pooler"] = True
        return config, arch
    act = hf.get("activation_function", "gelu_new")
    if act not in _ACTIVATIONS or hf.get("scale_attn_by_inverse_layer_idx") or not hf.get("scale_attn_weights", True):
        raise ConfigError(f"{where}: unsupported GPT-2 variant (activation_function={act!r}, "
                          f"scale_attn_by_inverse_layer_idx={hf.get('scale_attn_by_inverse_layer_idx')})")
    d = _get(hf, "n_embd", where)
    model = dict(vocab_size=_get(hf, "vocab_size", where), max_positions=_get(hf, "n_positions", where),
                 n_layers=_get(hf, "n_layer", where), d_model=d, n_heads=_get(hf, "n_head", where),
                 d_ff=hf.get("n_inner") or 4 * d, causal=True, norm="pre", activation=_ACTIVATIONS[act],
                 type_vocab_size=0, dropout=hf.get("resid_pdrop", 0.1), attn_dropout=hf.get("attn_pdrop", 0.1),
                 tie_embeddings=bool(hf.get("tie_word_embeddings", True)), norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                 init_std=hf.get("initializer_range", 0.02))
    return {"heads": list(GPT2_ARCHS[arch]), "model": model, "source": {"hf_architecture": arch}}, arch


_HF_PROBLEM = {"multi_label": "multi_label_classification", "regression": "regression"}


def _problem_type(model: TaskModel) -> dict[str, str]:
    """transformers' ``problem_type`` of a multi-label or regression head (its loss and its pipelines)."""
    return {"problem_type": _HF_PROBLEM[model.problem]} if model.problem in _HF_PROBLEM else {}


def _labels(hf: dict[str, Any]) -> list[str]:
    id2label = hf.get("id2label") or {str(i): f"LABEL_{i}" for i in range(hf.get("num_labels", 2))}
    return [id2label[k] for k in sorted(id2label, key=int)]


def _drop_ignorable(state: dict[str, Tensor], tie: bool) -> dict[str, Tensor]:
    """Buffers and the tied copies HF writes (decoder bias = predictions.bias; decoder/lm_head = embeddings)."""
    drop = {"cls.predictions.decoder.bias"}
    if tie:
        drop |= {"cls.predictions.decoder.weight", "lm_head.weight"}
    return {k: v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES) and k not in drop}


def load_hf(path: str | Path) -> LoadedModel:
    """A Hugging Face BERT, XLM-RoBERTa-XL or GPT-2 directory -> an lmforge model in memory (nothing
    written); a mean-pooled classifier that export_hf wrote comes back with its head."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"Hugging Face model directory not found: {root}")
    where = str(root / "config.json")
    hf_config = read_json(root / "config.json")
    config, arch = _dir_config_from_hf(hf_config, where)
    head = _dense_head(root, hf_config)
    if head and config.get("task") is None:
        config.update(task="classification", labels=_labels(hf_config), pooling="mean",
                      pooler="head.pooler.weight" in head)
    state, weights_file = _read_weights(root)
    if arch == "BertModel" and not any(k.endswith("pooler.dense.weight") for k in state):
        config.pop("pooler", None)  # saved with add_pooling_layer=False
    model = build_model(config, where)
    state = _drop_ignorable(state, config["model"]["tie_embeddings"])
    n = model.config.n_layers
    try:
        if arch in BERT_ARCHS:
            heads, task, pooler = BERT_ARCHS[arch]
            pooler = pooler and config.get("pooler") is True
            ours, sources = bert_to_lmforge(state, n, heads, task, pooler)
            known = set(bert_names(n, heads, task, pooler).values()) | {
                f"bert.encoder.layer.{i}.attention.self.{p}.{k}" for i in range(n)
                for p in ("query", "key", "value") for k in ("weight", "bias")}
            prefixed = {k if k.startswith(("bert.", "cls.", "classifier.")) else f"bert.{k}" for k in state}
        elif arch in XLMR_ARCHS:
            heads, task = XLMR_ARCHS[arch]
            ours, sources = xlmr_to_lmforge(state, n, heads, task, int(hf_config["pad_token_id"]))
            known = known_names(n, heads, task)
            prefixed = {k if k.startswith(("roberta.", "lm_head.", "classifier.")) else f"roberta.{k}" for k in state
                        if k not in ("pooler.dense.weight", "pooler.dense.bias")}  # XLMRobertaXLModel's unused pooler
        else:
            ours, sources = gpt2_to_lmforge(state, n)
            known = set(sources.values())  # every name the map knows, present or not
            prefixed = {k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}" for k in state}
    except ConfigError as exc:
        raise ConfigError(f"{weights_file}: {exc}") from None
    ours.update(head)
    unexpected = sorted(prefixed - known)
    if unexpected:
        raise ConfigError(f"{weights_file}: unexpected tensor {unexpected[0]} for {arch}")
    check_and_load(model, ours, weights_file, sources)
    st = root / "sentence_bert_config.json"  # sentence-transformers' own sequence limit
    if st.is_file() and isinstance(read_json(st).get("max_seq_length"), int):
        config["max_length"] = read_json(st)["max_seq_length"]
    config.update(_inference_settings(hf_config.get("lmforge")))
    return LoadedModel(model.eval(), _hf_tokenizer(root), config, list(config.get("labels", [])))


def import_hf(src: str | Path, out: str | Path) -> Path:
    """`lmforge import --from HF_DIR --out DIR`: everything is checked before the directory appears."""
    loaded = load_hf(src)
    config = dict(loaded.config)
    if loaded.tokenizer is not None:
        config["tokenizer"] = {"hash": loaded.tokenizer.hash, "kind": loaded.tokenizer.kind,
                               "vocab_size": loaded.tokenizer.vocab_size,
                               "special_tokens": loaded.tokenizer.special_tokens}
        if loaded.tokenizer.removed:  # the saved tokenizer.json lacks them; lmforge's max_length governs
            config["tokenizer"]["removed"] = loaded.tokenizer.removed
    return save_model_dir(loaded.model, config, out, loaded.tokenizer)


# ---------------------------------------------------------------------------------------------- export
def _refuse(cond: bool, what: str) -> None:
    if cond:
        raise ConfigError(f"cannot export to Hugging Face: {what}")


@dataclass
class HFCheckpoint:
    config: dict[str, Any]  # config.json
    tensors: dict[str, Tensor]  # model.safetensors
    sentence: bool  # an encoder: also write the sentence-transformers files (mean pooling)
    dense: list[Dense]  # a mean-pooled classifier's head, as sentence-transformers Dense layers


def hf_checkpoint(model: TaskModel, labels: list[str], tokenizer: Optional[LoadedTokenizer]) -> HFCheckpoint:
    """An lmforge model -> its Hugging Face checkpoint: GPT-2 for decoders with learned positions, StableLM
    or GPT-NeoX for rotary ones (lmforge/model/hf_decoders.py), BERT for post-LN encoders,
    XLM-RoBERTa-XL for pre-LN encoders (lmforge/model/hf_xlmr.py). LoRA and AdaLoRA are merged into the
    weights first (on a copy); adapters and prefixes add computation no transformers class has."""
    _refuse(model.method in ("adapter", "prefix"), f"method={model.method} adds layers that no transformers "
                                                   f"architecture has; export --to onnx serves it, or fine-tune "
                                                   f"with method=lora")
    _refuse(isinstance(model.head, VerbalizerHead), "a prompt-based classifier (prompt.template) reads its class "
            "from the MLM head at its template's [MASK], which no transformers class does; export --to onnx serves it")
    if model.method in ("lora", "adalora"):
        import copy

        model = copy.deepcopy(model)
        merge_lora(model)
    c = model.config
    tied = {k for k in ("mlm.decoder.weight", "lm.decoder.weight")} if c.tie_embeddings else set()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in tied}
    state = zero_biases(model, state)  # model.bias=false: every exported architecture has zero biases
    state = restore_pruned_heads(state, c)  # pruned heads come back as zeros: one head count per layer
    act = "gelu" if c.activation == "gelu" else "gelu_new"
    specials = tokenizer.special_tokens if tokenizer is not None else {}
    if c.causal:
        return _decoder_checkpoint(model, state, labels, specials)
    # ModernBERT has rotary positions and gated GELU, but normalises the embeddings and skips the first
    # block's attention LayerNorm, so no native encoder computes lmforge's rotary or gated blocks
    _refuse(c.positions != "learned", "model.positions=rotary in an encoder: no native transformers encoder "
                                      "computes lmforge's rotary blocks (export --to onnx serves it)")
    _refuse(c.activation == "gated_gelu", "model.activation=gated_gelu in an encoder: no native transformers "
                                          "encoder computes lmforge's gated blocks (export --to onnx serves it)")
    _refuse("lm" in model.heads, "an encoder with a causal LM head has no transformers equivalent")
    _refuse(c.norm == "post" and c.type_vocab_size == 0,
            "a post-LN encoder exports as BERT, which has token types (model.type_vocab_size=0)")
    dense: list[Dense] = []
    task = model.task
    head = model.head
    if task == "classification" and model.pooling == "mean":  # no transformers head pools the mean
        if head.pooler is not None:  # type: ignore[union-attr]
            dense.append((state.pop("head.pooler.weight"), state.pop("head.pooler.bias"), "tanh"))
        dense.append((state.pop("head.classifier.weight"), state.pop("head.classifier.bias"), "identity"))
        task = None
    elif task == "classification":
        _refuse(model.pooling != "first" or head.pooler is None,  # type: ignore[union-attr]
                f"a transformers sequence classifier pools the first token through a tanh dense layer; this "
                f"model pools with {model.pooling!r}{'' if head.pooler is not None else ' and no pooler'}")  # type: ignore[union-attr]
    hf: dict[str, Any] = {
        "vocab_size": c.vocab_size, "hidden_size": c.d_model, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "intermediate_size": c.d_ff, "hidden_act": act,
        "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.attn_dropout,
        "initializer_range": c.init_std, "layer_norm_eps": c.norm_eps, "position_embedding_type": "absolute",
        "tie_word_embeddings": c.tie_embeddings, "pad_token_id": specials.get("pad") or 0}
    if model.task:
        hf["id2label"] = {str(i): name for i, name in enumerate(labels)}
        hf["label2id"] = {name: i for i, name in enumerate(labels)}
    hf.update(_problem_type(model))
    if c.norm == "pre":
        arch = {"classification": "XLMRobertaXLForSequenceClassification", "tagging": "XLMRobertaXLForTokenClassification"
                }.get(task or "", "XLMRobertaXLForMaskedLM" if "mlm" in model.heads else "XLMRobertaXLModel")
        _refuse("sentence" in model.heads, "a pre-LN encoder with an NSP/SOP head has no transformers equivalent")
        heads, _ = XLMR_ARCHS[arch]
        pad = hf["pad_token_id"]
        hf.update(architectures=[arch], model_type=XLMR_MODEL_TYPE, max_position_embeddings=c.max_positions + pad + 1,
                  type_vocab_size=max(c.type_vocab_size, 1))
        tensors = lmforge_to_xlmr(state, c.n_layers, heads, task, pad, prefix=arch != "XLMRobertaXLModel")
        return HFCheckpoint(hf, tensors, True, dense)
    if task == "classification":
        arch = "BertForSequenceClassification"
    elif task == "tagging":
        arch = "BertForTokenClassification"
    elif "sentence" in model.heads:
        _refuse("mlm" not in model.heads, "a sentence head without MLM has no BERT equivalent")
        arch = "BertForPreTraining"
    else:
        arch = "BertForMaskedLM" if "mlm" in model.heads else "BertModel"
    heads, task, pooler = BERT_ARCHS[arch]
    hf.update(architectures=[arch], model_type="bert", max_position_embeddings=c.max_positions,
              type_vocab_size=c.type_vocab_size)
    pooler = pooler and (model.head.pooler if task == "classification" else model.pooler) is not None  # type: ignore[union-attr]
    tensors = lmforge_to_bert(state, c.n_layers, heads, task, pooler, prefix=arch != "BertModel")
    return HFCheckpoint(hf, tensors, True, dense)


def _decoder_checkpoint(model: TaskModel, state: dict[str, Tensor], labels: list[str],
                        specials: dict[str, int]) -> HFCheckpoint:
    """A decoder -> GPT-2 (learned positions), StableLM (rotary + gated GELU) or GPT-NeoX (rotary + GELU);
    a classifier on its last token -> their ``ForSequenceClassification`` (one bias-free ``score``)."""
    c = model.config
    _refuse(c.norm != "pre" or c.type_vocab_size != 0 or "mlm" in model.heads or model.task == "tagging",
            "a decoder exports as GPT-2, StableLM or GPT-NeoX, which are pre-LN, have no token types and "
            "no tagging or MLM head")
    score = None
    if model.task == "classification":
        head = model.head
        _refuse(model.pooling != "last" or head.pooler is not None or head.classifier.bias is not None,  # type: ignore[union-attr]
                "a transformers decoder classifier scores the last token with one bias-free Linear; this "
                "model has a tanh pooler or a biased classifier (made before lmforge's decoder head was "
                "bias-free; export --to onnx serves it)")
        _refuse(specials.get("pad") is None, "a transformers decoder classifier finds the last token by the "
                                             "pad id, and this model's tokenizer has no pad token")
        score = state["head.classifier.weight"]  # (K, C)
    lm = "lm" in model.heads and score is None
    if c.positions == "rotary" and c.activation == "gated_gelu":
        _refuse(c.bias, "model.bias=true with rotary positions and gated GELU: StableLM, the native class "
                        "for them, has no attention-output or feed-forward biases (export --to onnx serves it)")
        hf, tensors = stablelm_checkpoint(state, c, lm, specials)
        family, prefix = "StableLm", "model."
    elif c.positions == "rotary":
        hf, tensors = gpt_neox_checkpoint(state, c, lm, specials)
        family, prefix = "GPTNeoX", "gpt_neox."
    else:
        _refuse(c.activation == "gated_gelu", "model.activation=gated_gelu with learned positions: GPT-2 has no "
                                              "gated feed-forward (export --to onnx serves it)")
        arch = "GPT2LMHeadModel" if lm else "GPT2Model"
        act = "gelu" if c.activation == "gelu" else "gelu_new"
        hf = {"architectures": [arch], "model_type": "gpt2", "vocab_size": c.vocab_size, "n_positions": c.max_positions,
              "n_embd": c.d_model, "n_layer": c.n_layers, "n_head": c.n_heads, "n_inner": c.d_ff,
              "activation_function": act, "resid_pdrop": c.dropout, "embd_pdrop": c.dropout,
              "attn_pdrop": c.attn_dropout, "layer_norm_epsilon": c.norm_eps, "initializer_range": c.init_std,
              "tie_word_embeddings": c.tie_embeddings, "bos_token_id": specials.get("eos"),
              "eos_token_id": specials.get("eos"), "pad_token_id": specials.get("pad")}
        tensors = lmforge_to_gpt2(state, c.n_layers, lm)
        family, prefix = "GPT2", "transformer."
    if score is not None:  # the base model's tensors under the task model's prefix, plus score
        tensors = {f"{prefix}{k}": v for k, v in tensors.items()}
        tensors["score.weight"] = score.contiguous()
        hf.update(architectures=[f"{family}ForSequenceClassification"],
                  id2label={str(i): name for i, name in enumerate(labels)},
                  label2id={name: i for i, name in enumerate(labels)}, **_problem_type(model))
    return HFCheckpoint(hf, tensors, False, [])


def export_hf(model_dir: str | Path, out: str | Path) -> Path:
    """`lmforge export --to hf`: an lmforge model directory -> a Hugging Face directory (atomic); an
    encoder's also holds the sentence-transformers files (lmforge/model/sentence_files.py)."""
    from safetensors.torch import save_file

    loaded = load_model_dir(model_dir)
    checkpoint = hf_checkpoint(loaded.model, loaded.labels, loaded.tokenizer)
    hf = checkpoint.config
    settings = _inference_settings(loaded.config)
    if checkpoint.dense:  # where the classifier went: lmforge.load reads it back from there
        settings["classifier"] = "sentence-transformers Dense"
    if settings:  # transformers keeps unknown config keys; lmforge.load reads them back
        hf["lmforge"] = settings
    out = Path(out)
    with atomic_directory(out) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf, indent=2) + "\n", encoding="utf-8")
        save_file(checkpoint.tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if loaded.tokenizer is not None:
            (tmp / "tokenizer.json").write_text(loaded.tokenizer.json_text, encoding="utf-8")
            write_hf_tokenizer_files(loaded.tokenizer, tmp)
        if checkpoint.sentence:
            c = loaded.model.config
            write_sentence_files(tmp, c.d_model, min(loaded.config.get("max_length") or c.max_positions,
                                                     c.max_positions), checkpoint.dense)
    return out


def _dense_head(root: Path, hf_config: dict[str, Any]) -> dict[str, Tensor]:
    """A mean-pooled classifier's head from the sentence-transformers Dense layers export_hf wrote."""
    if not (hf_config.get("lmforge") or {}).get("classifier"):
        return {}
    dense = read_dense_head(root)
    if not dense or [a for _, _, a in dense] not in (["identity"], ["tanh", "identity"]):
        raise ConfigError(f"{root / 'modules.json'}: config.json says the classifier is in sentence-transformers "
                          f"Dense layers, but they are not lmforge's ([tanh,] identity after mean pooling)")
    names = ["head.classifier"] if len(dense) == 1 else ["head.pooler", "head.classifier"]
    return {f"{name}.{kind}": t for name, (w, b, _) in zip(names, dense) for kind, t in (("weight", w), ("bias", b))}


INFERENCE_SETTINGS = ("max_length", "truncation")  # how the predictor cuts inputs: as the model was trained


def _inference_settings(config: Any) -> dict[str, Any]:
    return {k: config[k] for k in INFERENCE_SETTINGS if isinstance(config, dict) and config.get(k) is not None}


Loader = Callable[[str | Path], LoadedModel]


def load_any(path: str | Path) -> LoadedModel:
    """An lmforge model directory, or a Hugging Face one (recognised by its config.json's model_type)."""
    cfg = read_json(Path(path) / "config.json") if Path(path).is_dir() else {}
    return load_hf(path) if "model_type" in cfg else load_model_dir(path)


__all__ = ["bert_to_lmforge", "gpt2_to_lmforge", "lmforge_to_bert", "lmforge_to_gpt2", "load_hf", "import_hf",
           "export_hf", "hf_checkpoint", "load_any", "model_dir_config"]
