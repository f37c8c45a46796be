"""A fine-tuning method by name: the one place its structure is built. Fine-tuning calls
``apply_method`` before training, and the model-directory reader calls it again before loading the
saved tensors, so the output of every method loads for inference."""

from __future__ import annotations

from typing import Any

from lmforge.config import ConfigError
from lmforge.model.adalora import add_adalora
from lmforge.model.heads import TaskModel
from lmforge.model.peft import add_adapters, add_lora, add_prefix

__all__ = ["METHODS", "apply_method"]

METHODS = ("full", "lora", "adalora", "adapter", "prefix")


def apply_method(model: TaskModel, method: str, settings: dict[str, Any]) -> None:
    """Add the method's tensors (``settings``: the method's config dict) and record both on the model,
    so that its directory says how to rebuild it. Does not choose what trains (see freeze_for_peft)."""
    if method == "lora":
        add_lora(model, settings["targets"], settings["rank"], settings["alpha"], settings["dropout"],
                 settings.get("backend", "lmforge"), settings.get("embedding_rank", 0))
    elif method == "adalora":
        add_adalora(model, settings["targets"], settings["rank"], settings["alpha"], settings["dropout"])
    elif method == "adapter":
        add_adapters(model, settings["placement"], settings["bottleneck"])
    elif method == "prefix":
        add_prefix(model, settings["length"])
    elif method != "full":
        raise ConfigError(f"method={method!r}: not one of {', '.join(METHODS)}")
    model.method, model.method_settings = method, dict(settings)
