"""The model a fine-tuning run trains: a TaskModel with the pretrained directory's weights, the
method's tensors (lmforge.model.peft.apply_method) and the choice of what trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from lmforge.config import ConfigError
from lmforge.finetune.config import FinetuneConfig
from lmforge.model.heads import TaskModel
from lmforge.model.modeldir import load_model_dir
from lmforge.model.methods import apply_method
from lmforge.model.peft import freeze_for_peft, merge_lora, plain_backbone_names
from lmforge.model.transformer import TransformerConfig
from lmforge.tokenize.prompt import verbalizer_ids
from lmforge.tokenize.tokenizer import special_token_ids

__all__ = ["build_finetune_model", "load_base", "method_settings", "prompt_token_ids"]

Verbalizer = tuple[list[int], int]  # (the label words' token ids in label order, the mask token's id)


def prompt_token_ids(config: FinetuneConfig, tok: Any, labels: list[str]) -> Optional[Verbalizer]:
    """A prompt-based run's verbalizer in token ids (None without ``prompt.template``)."""
    if config.prompt.template is None:
        return None
    mask = special_token_ids(tok)["mask"]
    if mask is None:
        raise ConfigError("prompt.template: the tokenizer has no mask token for the template's [MASK]")
    try:
        return verbalizer_ids(tok, config.prompt.verbalizer, labels), int(mask)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def method_settings(config: FinetuneConfig) -> dict[str, Any]:
    if config.method == "lora":
        return config.lora.model_dump(mode="json")
    if config.method == "adalora":
        # AdaLoRA starts from the LoRA shape (rank, alpha, dropout, targets) and prunes toward target_rank
        return {**config.lora.model_dump(mode="json"), **config.adalora.model_dump(mode="json")}
    if config.method == "adapter":
        return config.adapter.model_dump(mode="json")
    if config.method == "prefix":
        return config.prefix.model_dump(mode="json")
    return {}


def build_finetune_model(config: FinetuneConfig, arch: dict[str, Any], labels: list[str],
                         load_weights: bool = True, verbalizer: Optional[Verbalizer] = None) -> TaskModel:
    """TaskModel(arch) + the base weights of ``init_from`` (unless ``load_weights`` is off: the
    pre-flight times steps only) + the method, with only what the method and ``freeze`` allow trainable.
    ``verbalizer`` (prompt_token_ids) makes it prompt-based: the base's MLM head is its head."""
    words, mask = verbalizer if verbalizer is not None else (None, None)
    model = TaskModel(TransformerConfig(**arch), config.model_task, labels, heads=("mlm",) if words else (),
                      pooling=config.pooling, dropout=config.head_dropout, problem=config.problem,
                      verbalizer=words, mask_token_id=mask)
    if config.init_from and load_weights:
        load_base(model, config.init_from)
    apply_method(model, config.method, method_settings(config))
    if config.method != "full":
        freeze_for_peft(model)
    if config.freeze.embeddings:
        model.backbone.embed.requires_grad_(False)
    if config.freeze.layers > len(model.backbone.blocks):
        raise ConfigError(f"freeze.layers={config.freeze.layers}: the model has {len(model.backbone.blocks)} blocks")
    for block in list(model.backbone.blocks)[: config.freeze.layers]:
        block.requires_grad_(False)
    return model


@torch.no_grad()
def load_base(model: TaskModel, base_dir: str | Path) -> None:
    """Copy the backbone of a model directory (any format and method; a LoRA base is merged first)
    into ``model``; a fine-tuned model of the same task and labels (with the same head shapes) gives its
    whole task head, as when training a pruned classifier further; otherwise its BERT pooler (an
    imported BERT's, or a classifier's) starts a [CLS] classifier's pooler, as transformers'
    BertForSequenceClassification starts from BERT's."""
    base = load_model_dir(base_dir).model
    if base.method in ("adapter", "prefix"):
        raise ConfigError(f"init_from: {base_dir} was fine-tuned with method={base.method}, whose layers a new "
                          f"model does not have; start from its base model, or from a full or LoRA fine-tune")
    merge_lora(base)
    state, mine = base.state_dict(), model.state_dict()
    wanted = plain_backbone_names(model)
    missing = sorted(v for v in wanted.values() if v not in state)
    if missing:
        raise ConfigError(f"init_from: {base_dir} lacks {len(missing)} backbone tensors, e.g. {missing[0]}")
    for k, v in wanted.items():
        if tuple(state[v].shape) != tuple(mine[k].shape):
            raise ConfigError(f"init_from: {base_dir}: tensor {v} has shape {tuple(state[v].shape)}, "
                              f"this model expects {tuple(mine[k].shape)}")
    model.load_state_dict({k: state[v] for k, v in wanted.items()}, strict=False)
    if model.mlm is not None:  # prompt-based: the label words are read by the pretrained MLM head
        if base.mlm is None:
            raise ConfigError(f"init_from: {base_dir} has no MLM head (heads: {list(base.heads)}); prompt-based "
                              f"fine-tuning reads the label words with it: start from an MLM-pretrained encoder")
        model.mlm.load_state_dict(base.mlm.state_dict())
    if model.head is not None and base.head is not None and (base.task, base.problem) == (model.task, model.problem) \
            and set(base.labels) <= set(model.labels):
        theirs, ours = base.head.state_dict(), model.head.state_dict()
        if {k: v.shape[1:] if k.startswith("classifier.") else v.shape for k, v in theirs.items()} == \
                {k: v.shape[1:] if k.startswith("classifier.") else v.shape for k, v in ours.items()}:
            # continuing a classifier: recovery after pruning (the same labels), or a new task whose labels
            # extend its own (continual learning): its pooler, and its classifier rows for its labels
            rows = [model.labels.index(name) for name in base.labels]
            for key, value in theirs.items():
                if key.startswith("classifier."):
                    ours[key][rows] = value
                else:
                    ours[key] = value
            model.head.load_state_dict(ours)
            return
    pooler = getattr(model.head, "pooler", None)
    found = base.pooler if base.pooler is not None else getattr(base.head, "pooler", None)
    if pooler is not None and found is not None and found.weight.shape == pooler.weight.shape:
        pooler.load_state_dict(found.state_dict())
