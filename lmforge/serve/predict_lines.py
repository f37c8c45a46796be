"""`lmforge predict`: texts in (arguments, a file or stdin), one answer per text out (plain or JSON lines)."""

from __future__ import annotations

import json
from typing import Any, Iterable, Optional

from lmforge.config import ConfigError
from lmforge.serve.predictor import InputError, Predictor

TASK_NAMES = {"classify": "classify", "tag": "tag", "fill-mask": "fill_mask", "embed": "embed", "generate": "generate"}


def default_task(predictor: Predictor) -> str:
    """The model's most specific task: classification or tagging, else fill-mask, generation, embedding."""
    for task in ("classify", "tag", "fill_mask", "generate", "embed"):
        if task in predictor.tasks:
            return task
    raise ConfigError("this model supports no prediction task")


def predict_lines(predictor: Predictor, texts: Iterable[str], task: Optional[str] = None, as_json: bool = False,
                  options: Optional[dict[str, Any]] = None) -> Iterable[str]:
    """One output line per input text."""
    name = TASK_NAMES.get(task, task) if task else default_task(predictor)
    if name not in predictor.tasks:
        raise ConfigError(f"--task {task}: this model supports {', '.join(predictor.tasks)}")
    items = [t.rstrip("\n") for t in texts if t.strip()]
    if not items:
        raise ConfigError("no input text (give TEXT arguments, --file FILE, or lines on stdin)")
    opts = options or {}
    if opts.get("pairs"):
        yield from _pair_lines(predictor, name, items, as_json)
        return
    try:
        if name in ("fill_mask", "generate"):
            kw = {"top_k": opts.get("top_k", 5)} if name == "fill_mask" else opts.get("generate", {})
            answers = [getattr(predictor, name)(t, **kw) for t in items]
        else:
            answers = getattr(predictor, name)(items)
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    for text, answer in zip(items, answers):
        yield json.dumps({"text": text, name: answer}, ensure_ascii=False) if as_json else _plain(name, answer)


def _pair_lines(predictor: Predictor, task: str, items: list[str], as_json: bool) -> Iterable[str]:
    """--pair: each item is TEXT<TAB>SECOND TEXT; classify the pairs."""
    if task != "classify":
        raise ConfigError(f"--pair: text pairs are classified; --task {task} takes single texts")
    pairs = []
    for number, item in enumerate(items, start=1):
        if "\t" not in item:
            raise ConfigError(f"--pair: input {number} has no TAB between its two texts: {item[:60]!r}")
        pairs.append(item.split("\t", 1))
    try:
        answers = predictor.classify([a for a, _ in pairs], [b for _, b in pairs])
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    for (a, b), answer in zip(pairs, answers):
        yield json.dumps({"text": a, "pair": b, task: answer}, ensure_ascii=False) if as_json else _plain(task, answer)


def _plain(task: str, answer: Any) -> str:
    if task == "classify" and "value" in answer:  # regression
        return f"{answer['value']:.6g}"
    if task == "classify" and "labels" in answer:  # multi-label: the chosen labels, comma-separated
        return ",".join(answer["labels"]) + "\t" + " ".join(f"{k}={v:.4f}" for k, v in answer["scores"].items())
    if task == "classify":
        return f"{answer['label']}\t{answer['score']:.4f}"
    if task == "tag":
        return " ".join(f"{w['word']}/{w['label']}" for w in answer)
    if task == "fill_mask":
        return " | ".join(", ".join(f"{c['token']} {c['score']:.3f}" for c in cands) for cands in answer)
    if task == "generate":
        return answer["text"]
    return " ".join(f"{x:.6g}" for x in answer)
