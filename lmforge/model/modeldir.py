"""The lmforge model directory: what pretraining and fine-tuning write and what inference, export and
serving read.

    DIR/config.json        {"format_version": 1, "architecture": "lmforge.LanguageModel",
                            "heads": ["mlm" | "sentence" | "lm", ...], "model": {TransformerConfig},
                            optional task head: "task": "classification" | "tagging", "labels": [str, ...],
                            "pooling": "pooler" | "cls" | "mean" (classification only; default "cls"),
                            any other keys (objective, tokenizer meta, ...) are kept and ignored}
    DIR/model.safetensors  LanguageModel names (backbone.*, mlm.*, sentence.*, lm.*) plus the task head:
                             pooler.weight (C, C), pooler.bias (C,)      BERT's tanh pooler on the first token
                                                                         (present iff "pooling" is "pooler")
                             classifier.weight (L, C), classifier.bias (L,)   "task": "classification"
                             tagger.weight (L, C), tagger.bias (L,)           "task": "tagging" (per token)
    DIR/tokenizer.json     the tokenizer (tokenizers JSON)

Loading checks every tensor's presence and shape before anything is copied, so a bad file fails in
one line that names the tensor and the file, and never leaves a model half-loaded.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lmforge.config import ConfigError
from lmforge.model.heads import LanguageModel, mean_pool
from lmforge.model.transformer import TransformerConfig
from lmforge.tokenize.train import LoadedTokenizer, load_tokenizer

FORMAT_VERSION = 1
Task = Literal["classification", "tagging"]
Pooling = Literal["pooler", "cls", "mean"]
_HEADS = ("mlm", "sentence", "lm")


class ForgeModel(LanguageModel):
    """A LanguageModel plus an optional task head (classification over a pooled vector, or tagging)."""

    def __init__(self, cfg: TransformerConfig, heads: tuple[str, ...] = (), task: Optional[Task] = None,
                 n_labels: int = 0, pooling: Pooling = "cls") -> None:
        super().__init__(cfg, heads)  # type: ignore[arg-type]
        self.task = task
        self.pooling = pooling
        C = cfg.d_model
        self.pooler = nn.Linear(C, C) if pooling == "pooler" and task != "tagging" else None
        self.classifier = nn.Linear(C, n_labels) if task == "classification" else None
        self.tagger = nn.Linear(C, n_labels) if task == "tagging" else None

    def pool(self, hidden: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
        """(B, T, C) -> (B, C): tanh pooler or first token or masked mean."""
        if self.pooling == "mean":
            return mean_pool(hidden, attention_mask)
        first = hidden[:, 0]  # (B, C)
        return torch.tanh(self.pooler(first)) if self.pooler is not None else first

    def classify(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        assert self.classifier is not None
        # first-token pooling reads one position: the last block computes only that one (as TaskModel)
        first = None if self.pooling == "mean" else 1
        hidden = self.backbone(input_ids, attention_mask, n_queries=first)  # (B, T or 1, C)
        return self.classifier(self.pool(hidden, attention_mask))  # (B, L)

    def tag(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        assert self.tagger is not None
        return self.tagger(self.backbone(input_ids, attention_mask))  # (B, T, L)


@dataclass
class LoadedModel:
    model: ForgeModel
    tokenizer: Optional[LoadedTokenizer]
    config: dict[str, Any]  # the directory's config.json
    labels: list[str] = field(default_factory=list)


def build_model(config: dict[str, Any], where: str = "config.json") -> ForgeModel:
    """The (randomly initialised) module that a config.json describes."""
    try:
        cfg = TransformerConfig(**config["model"])
    except KeyError:
        raise ConfigError(f"{where}: missing key 'model' (the transformer configuration)") from None
    except (TypeError, ValidationError) as exc:
        first = str(exc).splitlines()
        raise ConfigError(f"{where}: bad 'model': {' '.join(first[:3])}") from None
    heads = tuple(config.get("heads", ()))
    bad = [h for h in heads if h not in _HEADS]
    if bad:
        raise ConfigError(f"{where}: unknown head {bad[0]!r} in 'heads' (known: {', '.join(_HEADS)})")
    task = config.get("task")
    if task not in (None, "classification", "tagging"):
        raise ConfigError(f"{where}: 'task' is {task!r}; expected 'classification' or 'tagging'")
    labels = config.get("labels", [])
    if task and (not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels)):
        raise ConfigError(f"{where}: 'task': {task!r} needs 'labels', a non-empty list of strings")
    pooling = config.get("pooling", "cls")
    if pooling not in ("pooler", "cls", "mean"):
        raise ConfigError(f"{where}: 'pooling' is {pooling!r}; expected 'pooler', 'cls' or 'mean'")
    return ForgeModel(cfg, heads, task, len(labels), pooling)


def aliases(model: nn.Module) -> dict[str, str]:
    """Tied parameter name -> the first name of the same tensor (e.g. mlm.decoder.weight -> embeddings)."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[name] = first[id(p)]
        else:
            first[id(p)] = name
    return out


def check_and_load(model: nn.Module, tensors: dict[str, Tensor], where: str,
                   sources: Optional[dict[str, str]] = None) -> None:
    """Load `tensors` into `model` only if every name and shape matches; else one ConfigError.

    `sources` maps our names to the names in the file (for messages about converted checkpoints).
    """
    src = sources or {}
    tied = aliases(model)
    tensors = dict(tensors)
    for name, target in tied.items():  # a writer may have kept the tied copy's name instead of the first
        if target not in tensors and name in tensors:
            tensors[target] = tensors.pop(name)
    expected = {k: v for k, v in model.state_dict().items() if k not in tied}
    for name, value in expected.items():
        if name not in tensors:
            raise ConfigError(f"{where}: missing tensor {src.get(name, name)}")
        got = tuple(tensors[name].shape)
        if got != tuple(value.shape):
            raise ConfigError(f"{where}: tensor {src.get(name, name)} has shape {got}, "
                              f"the config expects {tuple(value.shape)}")
    extra = sorted(set(tensors) - set(expected) - set(tied))
    if extra:
        raise ConfigError(f"{where}: unexpected tensor {src.get(extra[0], extra[0])} (not part of this model)")
    for name, target in tied.items():  # a tied copy in the file must equal the tensor it is tied to
        if name in tensors and not torch.equal(tensors[name], tensors[target]):
            raise ConfigError(f"{where}: tensor {src.get(name, name)} should be tied to {src.get(target, target)}")
    with torch.no_grad():
        model.load_state_dict({k: tensors[k].to(v.dtype) for k, v in expected.items()}, strict=False)


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def read_safetensors(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None


def load_model_dir(path: str | Path) -> LoadedModel:
    """An lmforge model directory -> model in eval mode, its tokenizer (if any) and config."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"model directory not found: {root}")
    config = read_json(root / "config.json")
    if config.get("architecture") == "lmforge.TaskModel":  # a `lmforge finetune` output directory
        config, tensors = _from_finetune_dir(config, root)
    elif config.get("architecture", "lmforge.LanguageModel") != "lmforge.LanguageModel":
        raise ConfigError(f"{root / 'config.json'}: architecture {config.get('architecture')!r} is not an "
                          "lmforge model; import Hugging Face checkpoints with `lmforge import`")
    else:
        tensors = read_safetensors(root / "model.safetensors")
    model = build_model(config, str(root / "config.json"))
    check_and_load(model, tensors, str(root / "model.safetensors"))
    tok_file = root / "tokenizer.json"
    tokenizer = load_tokenizer(tok_file) if tok_file.is_file() else None
    return LoadedModel(model.eval(), tokenizer, config, list(config.get("labels", [])))


def _from_finetune_dir(config: dict[str, Any], root: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A fine-tuned TaskModel directory in this module's terms: the head's tensors renamed
    (head.pooler -> pooler, head.classifier -> classifier or tagger), the config reduced to ours.
    Its classification head is BERT's (tanh pooler over the first token), which is our "pooler", or a
    masked mean without pooler (finetune pooling=mean), which is our "mean"."""
    where = root / "config.json"
    if not (root / "model.safetensors").is_file():
        raise ConfigError(f"{root}: holds only {config.get('method')} adapter weights; fine-tune with method=full or "
                          "save a merged LoRA model to load it for inference")
    task, arch = config.get("task"), config.get("model") or {}
    if task == "classification" and arch.get("causal"):
        raise ConfigError(f"{where}: a decoder classifier (last-token pooling) cannot be served yet")
    head = "classifier" if task == "classification" else "tagger"
    tensors = {}
    for name, tensor in read_safetensors(root / "model.safetensors").items():
        if name.startswith("head.classifier."):
            name = head + name[len("head.classifier"):]
        elif name.startswith("head.pooler."):
            name = "pooler" + name[len("head.pooler"):]
        tensors[name] = tensor
    ours = {"format_version": FORMAT_VERSION, "architecture": "lmforge.LanguageModel", "model": arch, "task": task,
            "labels": config.get("labels", [])}
    if task == "classification":
        ours["pooling"] = "mean" if config.get("pooling") == "mean" else "pooler"
    data = config.get("data") or {}
    if data.get("max_length"):
        ours["max_length"] = data["max_length"]  # what it was trained on; the predictor truncates the same way
    if task == "classification" and data.get("truncation", "head") != "head":
        ours["truncation"] = data["truncation"]
    return ours, tensors


def save_model_dir(model: ForgeModel, config: dict[str, Any], out: str | Path,
                   tokenizer: Optional[LoadedTokenizer] = None, extra_files: Optional[dict[str, str]] = None) -> Path:
    """Write a complete directory atomically: a temporary sibling renamed into place at the end."""
    out = Path(out)
    with atomic_directory(out) as tmp:
        config = {"format_version": FORMAT_VERSION, "architecture": "lmforge.LanguageModel", **config}
        (tmp / "config.json").write_text(json.dumps(config, indent=1, ensure_ascii=False), encoding="utf-8")
        tied = aliases(model)
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in tied}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            (tmp / "tokenizer.json").write_text(tokenizer.json_text, encoding="utf-8")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return out


@contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """A temporary sibling of ``out`` to fill; it replaces ``out`` only if the block completes,
    so a reader never sees a half-written directory and a failure leaves nothing behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def model_dir_config(model: ForgeModel, labels: Optional[list[str]] = None, **extra: Any) -> dict[str, Any]:
    """The config.json keys that describe `model`."""
    config: dict[str, Any] = {"heads": list(model.heads), "model": model.config.model_dump(mode="json")}
    if model.task:
        config.update(task=model.task, labels=list(labels or []), pooling=model.pooling)
    elif model.pooler is not None:
        config["pooling"] = "pooler"
    config.update(extra)
    return config
