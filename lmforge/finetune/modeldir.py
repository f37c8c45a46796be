"""Fine-tuned model directories: build (base + method), save, load, predict.

    DIR/config.json          task, labels, method (+ its settings), model architecture, base dir, pad id
    DIR/model.safetensors    method=full (or a merged LoRA export): every weight
    DIR/adapter.safetensors  PEFT methods: only the new tensors and the task head
    DIR/tokenizer.json

A PEFT directory needs its base model dir (config.json ``base``) to load: the base weights are
read from there, then the adapter file on top.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file, save_model
from tokenizers import Tokenizer

from lmforge.config import ConfigError
from lmforge.finetune import peft
from lmforge.finetune.adalora import add_adalora
from lmforge.model.heads import TaskModel
from lmforge.model.transformer import TransformerConfig
from lmforge.tokenize.train import load_tokenizer as load_tokenizer_file

__all__ = ["apply_method", "build_task_model", "load_base", "load_task_model", "predict", "save_task_model"]

FORMAT_VERSION = 1
ARCHITECTURE = "lmforge.TaskModel"


def read_model_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{directory}: not an lmforge model directory (no config.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg})") from None


def load_base(model: TaskModel, base_dir: str | Path) -> None:
    """Copy the pretrained backbone (``backbone.*`` of an lmforge pretrain output) into ``model``, and
    an imported BERT's pretrained pooler (``pooler.*``) into a [CLS] classifier's pooler."""
    weights = Path(base_dir) / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"init_from: {base_dir} has no model.safetensors")
    tensors = load_file(str(weights))
    state = {k: v for k, v in tensors.items() if k.startswith("backbone.")}
    # a PEFT wrapper keeps the wrapped Linear as `.base` (ours) or `.base_layer` (peft's):
    # backbone.blocks.0.attn.qkv.base.weight <- backbone.blocks.0.attn.qkv.weight
    wanted = {k: k.replace(".base_layer.", ".").replace(".base.", ".") for k in model.state_dict()
              if k.startswith("backbone.") and not peft.is_peft_param(k)}
    missing = sorted(v for v in wanted.values() if v not in state)
    if missing:
        raise ConfigError(f"init_from: {weights} lacks {len(missing)} backbone tensors, e.g. {missing[0]}")
    model.load_state_dict({k: state[v] for k, v in wanted.items()}, strict=False)
    # the pretrained tanh pooler starts the head's, as in transformers' BertForSequenceClassification
    pooler = getattr(model.head, "pooler", None) if model.task == "classification" else None
    found = tensors.get("pooler.weight")
    if isinstance(pooler, torch.nn.Linear) and found is not None and found.shape == pooler.weight.shape:
        pooler.load_state_dict({"weight": tensors["pooler.weight"], "bias": tensors["pooler.bias"]})


def apply_method(model: TaskModel, method: str, settings: dict[str, Any]) -> None:
    """Add the method's tensors and choose what trains. ``settings`` is the method's config dict."""
    if method == "full":
        return
    if method == "lora":
        peft.add_lora(model, settings["targets"], settings["rank"], settings["alpha"], settings["dropout"],
                      settings.get("backend", "lmforge"), settings.get("embedding_rank", 0))
    elif method == "adalora":
        add_adalora(model, settings["targets"], settings["rank"], settings["alpha"], settings["dropout"])
    elif method == "adapter":
        peft.add_adapters(model, settings["placement"], settings["bottleneck"])
    elif method == "prefix":
        peft.add_prefix(model, settings["length"])
    else:
        raise ConfigError(f"method={method!r}: not one of full, lora, adalora, adapter, prefix")
    peft.freeze_for_peft(model)


def build_task_model(arch: dict[str, Any], task: str, labels: list[str], method: str, settings: dict[str, Any],
                     head_dropout: float = 0.1, pooling: Optional[str] = None) -> TaskModel:
    model = TaskModel(TransformerConfig(**arch), task, labels, pooling=pooling,  # type: ignore[arg-type]
                      dropout=head_dropout)
    apply_method(model, method, settings)
    return model


def save_task_model(model: TaskModel, out: Path, meta: dict[str, Any], tokenizer_file: Path,
                    merge: bool = False) -> None:
    """Write config.json, the weights (all for full, adapter + head for PEFT) and the tokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    config = {"format_version": FORMAT_VERSION, "architecture": ARCHITECTURE, **meta}
    if meta["method"] == "full":
        save_model(model, str(out / "model.safetensors"))
    else:
        save_file(peft.peft_state(model), str(out / "adapter.safetensors"))
        if merge:  # a plain full model: the LoRA update folded into the weights (on a copy)
            import copy

            merged = copy.deepcopy(model)
            peft.merge_lora(merged)
            save_model(merged, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    if tokenizer_file.resolve() != (out / "tokenizer.json").resolve():
        shutil.copyfile(tokenizer_file, out / "tokenizer.json")


def load_task_model(directory: str | Path, prefer_merged: bool = True) -> tuple[TaskModel, dict[str, Any]]:
    """Rebuild a fine-tuned model from its directory (PEFT: base weights from ``base``, then the adapter)."""
    directory = Path(directory)
    meta = read_model_config(directory)
    if meta.get("architecture") != ARCHITECTURE:
        raise ConfigError(f"{directory}/config.json: architecture {meta.get('architecture')!r}, "
                          f"expected {ARCHITECTURE} (a fine-tuned model)")
    full = directory / "model.safetensors"
    method = meta["method"]
    if method != "full" and not (prefer_merged and full.is_file()):
        model = build_task_model(meta["model"], meta["task"], meta["labels"], method, meta["settings"],
                                 pooling=meta.get("pooling"))
        if meta.get("base"):
            load_base(model, meta["base"])
        adapter = load_file(str(directory / "adapter.safetensors"))
        missing = sorted(set(peft.peft_state(model)) - set(adapter))
        if missing:
            raise ConfigError(f"{directory}/adapter.safetensors lacks {missing[0]} (and {len(missing) - 1} more)")
        model.load_state_dict(adapter, strict=False)
    else:
        model = build_task_model(meta["model"], meta["task"], meta["labels"], "full", {}, pooling=meta.get("pooling"))
        model.load_state_dict(load_file(str(full)))
    model.eval()
    return model, meta


@torch.no_grad()
def predict(model: TaskModel, batches: Any) -> list[np.ndarray]:
    """Softmax probabilities per batch: (B, K) for classification, (B, T, K) for tagging."""
    model.eval()
    out = []
    for batch in batches:
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        out.append(torch.softmax(logits.float(), -1).numpy())
    return out


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """The model's tokenizer without padding or truncation of its own (a directory imported before
    `lmforge import` removed them may still carry them): the encoders cut at data.max_length and
    collate pads per batch."""
    path = Path(directory) / "tokenizer.json" if Path(directory).is_dir() else Path(directory)
    if not path.is_file():
        raise ConfigError(f"{directory}: no tokenizer.json")
    return load_tokenizer_file(path).tokenizer


def pad_id(tok: Tokenizer) -> int:
    """Padding id; a decoder tokenizer without [PAD] pads with its end-of-text token (GPT-2's habit),
    and last-token pooling reads the attention mask, so the pad id never changes a prediction."""
    from lmforge.tokenize.train import special_token_ids

    found: Optional[int] = special_token_ids(tok)["pad"]
    return 0 if found is None else int(found)
