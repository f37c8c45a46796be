"""The lmforge model directory: what pretraining and fine-tuning write (``save_model_dir``, the one
writer) and what inference, evaluation, export and serving read (``load_model_dir``, the one reader).

    DIR/config.json        {"format_version": 2, "architecture": "lmforge.LanguageModel",
                            "heads": ["mlm" | "sentence" | "lm", ...], "model": {TransformerConfig},
                            "method": "full" | "lora" | "adalora" | "adapter" | "prefix", "settings": {...},
                            optional task head: "task": "classification" | "tagging", "labels": [str, ...],
                            "problem": "multi_label" | "regression" (classification; absent: single_label),
                            "thresholds": {label: float} (multi_label: tuned on validation),
                            "pooling": "first" | "mean" | "last", "pooler": bool (classification),
                            "classifier_bias": bool (classification; absent: true, as before it existed),
                            "pooler": true without a task: an imported BERT's tanh pooler,
                            "max_length", "truncation": how the predictor cuts inputs (as trained),
                            "prompt": {"template": str, "verbalizer": {label: word}, "label_token_ids": [int],
                                       "mask_token_id": int}: a prompt-based classifier (its head is the
                                       MLM head at the template's [MASK]; lmforge/tokenize/prompt.py),
                            any other keys (objective, tokenizer meta, fine-tuning data, ...) are kept}
    DIR/model.safetensors  every tensor of the TaskModel as built by config.json (method included):
                             backbone.*, mlm.*, sentence.*, lm.*   LanguageModel names
                             head.pooler.* (C, C), head.classifier.* (L, C)   the task head
                             pooler.* (C, C)                       the pretrained pooler, without a task
                             ...lora_A/lora_B, .adapter., .prefix.  the method's tensors, where it put them
    DIR/tokenizer.json     the tokenizer (tokenizers JSON)

A PEFT model's directory holds the base weights too, so it loads on its own (no base directory needed).
Previous layouts still load: format 1 of this file (head tensors named pooler/classifier/tagger,
"pooling": "pooler" | "cls" | "mean") and the fine-tuning directories of format 1
("architecture": "lmforge.TaskModel", PEFT weights in adapter.safetensors over the ``base`` directory).

Loading checks every tensor's presence and shape before anything is copied, so a bad file fails in
one line that names the tensor and the file, and never leaves a model half-loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lmforge.config import ConfigError
from lmforge.model.heads import PROBLEMS, TASKS, TaskModel, VerbalizerHead
from lmforge.model.methods import METHODS, apply_method
from lmforge.model.peft import plain_backbone_names
from lmforge.model.transformer import TransformerConfig
from lmforge.tokenize.tokenizer import LoadedTokenizer, load_tokenizer

FORMAT_VERSION = 2
ARCHITECTURE = "lmforge.LanguageModel"
V1_FINETUNE = "lmforge.TaskModel"  # the fine-tuning directories of format 1
_HEADS = ("mlm", "sentence", "lm")
_POOLINGS = ("first", "mean", "last")
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")


@dataclass
class LoadedModel:
    model: TaskModel
    tokenizer: Optional[LoadedTokenizer]
    config: dict[str, Any]  # the directory's config.json (in this version's terms)
    labels: list[str] = field(default_factory=list)


def build_model(config: dict[str, Any], where: str = "config.json") -> TaskModel:
    """The (randomly initialised) module that a config.json describes, its method's tensors included."""
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
    if task not in (None, *TASKS):
        raise ConfigError(f"{where}: 'task' is {task!r}; expected 'classification' or 'tagging'")
    labels = config.get("labels") or []
    problem = config.get("problem", "single_label")
    if problem not in PROBLEMS or (problem != "single_label" and task != "classification"):
        raise ConfigError(f"{where}: 'problem' is {problem!r}; expected one of {', '.join(PROBLEMS)} "
                          f"(with task classification)")
    least = 1 if problem == "regression" else 2
    if task and (not isinstance(labels, list) or len(set(labels)) < least or len(set(labels)) != len(labels)
                 or not all(isinstance(x, str) for x in labels) or (problem == "regression" and len(labels) != 1)):
        need = "one string (the target's name)" if problem == "regression" else "at least two distinct strings"
        raise ConfigError(f"{where}: 'task': {task!r} needs 'labels', a list of {need}")
    pooling = config.get("pooling")
    if pooling not in (None, *_POOLINGS):
        raise ConfigError(f"{where}: 'pooling' is {pooling!r}; expected one of {', '.join(_POOLINGS)}")
    pooler = config.get("pooler")
    if pooler not in (None, True, False):
        raise ConfigError(f"{where}: 'pooler' is {pooler!r}; expected true or false")
    classifier_bias = config.get("classifier_bias", True)  # absent before the bias-free decoder head
    if classifier_bias not in (True, False):
        raise ConfigError(f"{where}: 'classifier_bias' is {classifier_bias!r}; expected true or false")
    method = config.get("method", "full")
    if method not in METHODS:
        raise ConfigError(f"{where}: 'method' is {method!r}; expected one of {', '.join(METHODS)}")
    verbalizer, mask_id = _prompt_ids(config.get("prompt"), labels, where)
    try:
        model = TaskModel(cfg, task, labels, heads, pooling, pooler=pooler,  # type: ignore[arg-type]
                          classifier_bias=classifier_bias if task == "classification" else None,
                          problem=problem, verbalizer=verbalizer, mask_token_id=mask_id)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    try:
        apply_method(model, method, config.get("settings") or {})
    except KeyError as exc:
        raise ConfigError(f"{where}: 'settings' of method {method!r} lacks {exc.args[0]!r}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: method {method!r}: {exc}") from None
    return model


def _prompt_ids(prompt: Any, labels: list[str], where: str) -> tuple[Optional[list[int]], Optional[int]]:
    """(verbalizer token ids, mask token id) of a prompt-based classifier's "prompt", else (None, None)."""
    if prompt is None:
        return None, None
    from lmforge.tokenize.prompt import PromptTemplate

    ids, mask = (prompt.get("label_token_ids"), prompt.get("mask_token_id")) if isinstance(prompt, dict) else (None, None)
    if not (isinstance(ids, list) and all(isinstance(i, int) for i in ids) and len(ids) == len(labels)
            and isinstance(mask, int) and isinstance(prompt.get("template"), str)):
        raise ConfigError(f"{where}: 'prompt' needs 'template' (a string), 'label_token_ids' (one int per label) "
                          f"and 'mask_token_id' (an int)")
    try:
        PromptTemplate(prompt["template"])
    except ValueError as exc:
        raise ConfigError(f"{where}: 'prompt': {exc}") from None
    return ids, mask


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
    """An lmforge model directory of any format -> model in eval mode, its tokenizer (if any) and config."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"model directory not found: {root}")
    config = read_json(root / "config.json")
    if config.get("architecture") == V1_FINETUNE:
        config, tensors = _from_v1_finetune(config, root)
    elif config.get("architecture", ARCHITECTURE) != ARCHITECTURE:
        raise ConfigError(f"{root / 'config.json'}: architecture {config.get('architecture')!r} is not an "
                          "lmforge model; import Hugging Face checkpoints with `lmforge import`")
    elif config.get("format_version", 1) == 1:
        config, renames = _v1_config(config)
        tensors = _renamed(read_safetensors(root / "model.safetensors"), renames)
    elif config.get("format_version") == FORMAT_VERSION:
        tensors = read_safetensors(root / "model.safetensors")
    else:
        raise ConfigError(f"{root / 'config.json'}: format_version {config.get('format_version')!r}; this lmforge "
                          f"reads 1 and {FORMAT_VERSION} (a newer lmforge wrote it?)")
    model = build_model(config, str(root / "config.json"))
    check_and_load(model, tensors, str(root / "model.safetensors"))
    tok_file = root / "tokenizer.json"
    tokenizer = load_tokenizer(tok_file) if tok_file.is_file() else None
    return LoadedModel(model.eval(), tokenizer, config, list(config.get("labels") or []))


def current_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config.json of this layout in format 2's terms (deployed ONNX directories keep the config of
    the directory they were exported from, of either format)."""
    return _v1_config(config)[0] if config.get("format_version", 1) == 1 else config


def _v1_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Format 1 of this layout in format 2's terms: its "pooling" ("pooler": BERT's tanh pooler on the
    first token, "cls": the first token as it is, "mean") -> "pooling" + "pooler", and the renames of
    its head tensors (pooler/classifier/tagger -> head.*)."""
    config = dict(config, format_version=FORMAT_VERSION)
    old = config.pop("pooling", None)
    if config.get("task") == "classification":
        config["pooling"] = "mean" if old == "mean" else "first"
        config["pooler"] = old == "pooler"
        renames = {"pooler.": "head.pooler.", "classifier.": "head.classifier."}
    elif config.get("task") == "tagging":
        renames = {"tagger.": "head.classifier."}
    else:
        renames = {}
        if old == "pooler":
            config["pooler"] = True
    return config, renames


def _renamed(tensors: dict[str, Tensor], renames: dict[str, str]) -> dict[str, Tensor]:
    out = {}
    for name, tensor in tensors.items():
        prefix = next((p for p in renames if name.startswith(p)), None)
        out[renames[prefix] + name[len(prefix):] if prefix else name] = tensor
    return out


def _from_v1_finetune(meta: dict[str, Any], root: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A format-1 `lmforge finetune` directory: TaskModel names already; a PEFT run kept only its
    new tensors (adapter.safetensors) over the base directory named in config.json's ``base``
    (or a merged LoRA model in model.safetensors, which is read instead)."""
    where = root / "config.json"
    method = meta.get("method", "full")
    config = {k: v for k, v in meta.items() if k not in ("architecture", "format_version", "pad_id")}
    config.update(format_version=FORMAT_VERSION, architecture=ARCHITECTURE, heads=[])
    if meta.get("task") == "tagging" or config.get("pooling") is None:
        config.pop("pooling", None)
    data = meta.get("data") or {}
    if data.get("max_length"):
        config["max_length"] = data["max_length"]  # what it was trained on; the predictor truncates the same way
    if meta.get("task") == "classification" and data.get("truncation", "head") != "head":
        config["truncation"] = data["truncation"]
    if method == "full" or (root / "model.safetensors").is_file():
        config.update(method="full", settings={})
        return config, read_safetensors(root / "model.safetensors")
    if not meta.get("base"):
        raise ConfigError(f"{where}: a method={method} directory of format 1 needs its 'base' model directory")
    model = build_model(config, str(where))
    base = load_model_dir(meta["base"]).model
    wanted = plain_backbone_names(model)
    base_state = base.state_dict()
    missing = sorted(v for v in wanted.values() if v not in base_state)
    if missing:
        raise ConfigError(f"{meta['base']}: lacks backbone tensor {missing[0]} that {where} needs")
    state = {k: base_state[v] for k, v in wanted.items()}
    state.update(read_safetensors(root / "adapter.safetensors"))  # the method's tensors and the head
    return config, state


def save_model_dir(model: nn.Module, config: dict[str, Any], out: str | Path,
                   tokenizer: Optional[LoadedTokenizer] = None, extra_files: Optional[dict[str, str]] = None) -> Path:
    """Write a model directory: its config.json (``config``, usually from ``model_dir_config``), every
    tensor of ``model`` and the tokenizer. A new directory appears whole (a temporary sibling renamed
    into place); into an existing one (a training run's OUT, which also holds checkpoints and metrics),
    config.json is removed first and written last, each file replaced atomically, so a reader sees
    either no model or a complete one, never new weights under an old config."""
    out = Path(out)
    config = {**config, "format_version": FORMAT_VERSION, "architecture": ARCHITECTURE}
    tied = aliases(model)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in tied}

    def fill(target: Path) -> None:
        save_file(state, str(target / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            (target / "tokenizer.json").write_text(tokenizer.json_text, encoding="utf-8")
        for name, text in (extra_files or {}).items():
            (target / name).write_text(text, encoding="utf-8")
        (target / "config.json").write_text(json.dumps(config, indent=1, ensure_ascii=False), encoding="utf-8")

    if not out.exists():
        with atomic_directory(out) as tmp:
            fill(tmp)
        return out
    (out / "config.json").unlink(missing_ok=True)
    (out / "adapter.safetensors").unlink(missing_ok=True)  # format 1's PEFT file: stale beside format 2
    tmp = Path(tempfile.mkdtemp(prefix=".model-tmp-", dir=out))
    try:
        fill(tmp)
        names = sorted(p.name for p in tmp.iterdir())
        for name in sorted(names, key=lambda n: n == "config.json"):  # config.json last
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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


def model_dir_config(model: TaskModel, **extra: Any) -> dict[str, Any]:
    """The config.json keys that describe ``model`` (``extra`` adds or overrides keys)."""
    config: dict[str, Any] = {"heads": list(model.heads), "model": model.config.model_dump(mode="json"),
                              "method": model.method, "settings": model.method_settings}
    if model.task:
        config.update(task=model.task, labels=list(model.labels))
    if model.problem != "single_label":
        config["problem"] = model.problem
    if model.pooling is not None:
        head = model.head
        config.update(pooling=model.pooling, pooler=head.pooler is not None,  # type: ignore[union-attr]
                      classifier_bias=head.classifier.bias is not None)  # type: ignore[union-attr]
    elif model.pooler is not None:
        config["pooler"] = True
    if isinstance(model.head, VerbalizerHead):  # the template and label words come with ``extra["prompt"]``
        config["prompt"] = {**extra.pop("prompt", {}), "label_token_ids": model.head.label_token_ids.tolist(),
                            "mask_token_id": model.head.mask_token_id}
    config.update(extra)
    return config
