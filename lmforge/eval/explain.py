"""Token attributions for a classifier's prediction by integrated gradients (Sundararajan et al. 2017).

The path runs in embedding space from a baseline (every token replaced by padding, the special
tokens kept) to the real input; each token's attribution is (x - x') . mean gradient along the path,
summed over the embedding width. Attributions add up to f(x) - f(baseline) for the explained logit
(completeness), and the report says how far the Riemann sum is from that.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from lmforge.serve.predictor import InputError, Predictor


@dataclass
class Attribution:
    tokens: list[str]
    scores: list[float]  # one per token, in logit units
    label: str  # the explained class
    probability: float  # the model's probability for it on the real input
    delta: float  # |sum(scores) - (f(x) - f(baseline))|: the integral's approximation error


def explain(predictor: Predictor, text: str, target: Optional[str] = None, steps: int = 50) -> Attribution:
    """Attributions of ``text``'s tokens to the logit of ``target`` (default: the predicted class)."""
    if predictor.model.task != "classification":
        raise InputError("explain needs a classification model (its config.json task is not 'classification')")
    token_ids, tokens, special_mask = predictor.classify_input(text)  # what classify sees (its truncation)
    ids = torch.tensor([token_ids])  # (1, T)
    mask = torch.ones_like(ids)
    special = torch.tensor([[bool(m) for m in special_mask]])  # (1, T)
    model = predictor.model
    embed = model.backbone.embed.tokens
    with torch.no_grad():
        probs = model.classify(ids, mask).float().softmax(-1)[0]  # (L,)
    index = int(probs.argmax()) if target is None else _label_index(predictor.labels, target)

    with torch.no_grad():
        real = embed(ids)  # (1, T, C)
        base = embed(torch.where(special, ids, torch.full_like(ids, predictor.pad_id)))  # (1, T, C)
    alphas = (torch.arange(steps, dtype=real.dtype) + 0.5) / steps  # midpoint rule, (S,)
    path = (base + alphas[:, None, None] * (real - base)).requires_grad_(True)  # (S, T, C)

    def swap_embeddings(module: torch.nn.Module, args: tuple, output: Tensor) -> Tensor:
        return path  # the token embeddings of the S interpolated inputs

    handle = embed.register_forward_hook(swap_embeddings)
    try:
        logits = model.classify(ids.expand(steps, -1), mask.expand(steps, -1))[:, index]  # (S,)
        (gradients,) = torch.autograd.grad(logits.sum(), path)  # (S, T, C)
    finally:
        handle.remove()
    scores = ((real - base)[0] * gradients.mean(dim=0)).sum(dim=-1)  # (T,)
    with torch.no_grad():
        ends = model.classify(torch.cat([ids, torch.where(special, ids, torch.full_like(ids, predictor.pad_id))]),
                              mask.expand(2, -1))[:, index]  # f(x), f(baseline)
    delta = abs(float(scores.sum()) - float(ends[0] - ends[1]))
    return Attribution(tokens, [float(s) for s in scores], predictor.labels[index], float(probs[index]), delta)


def _label_index(labels: list[str], target: str) -> int:
    if target not in labels:
        raise InputError(f"unknown label {target!r} (the model's labels: {', '.join(labels)})")
    return labels.index(target)


def to_html(attribution: Attribution, text: str) -> str:
    """A self-contained HTML heat map: red pushes towards the label, blue away from it."""
    peak = max((abs(s) for s in attribution.scores), default=1.0) or 1.0
    spans = []
    for token, score in zip(attribution.tokens, attribution.scores):
        alpha = min(abs(score) / peak, 1.0)
        colour = f"rgba(220,40,40,{alpha:.2f})" if score > 0 else f"rgba(40,90,220,{alpha:.2f})"
        spans.append(f'<span title="{score:+.4f}" style="background:{colour};padding:2px 3px;margin:1px;'
                     f'border-radius:3px">{html.escape(token)}</span>')
    return (
        '<!doctype html><meta charset="utf-8"><title>lmforge explain</title>'
        '<body style="font-family:sans-serif;max-width:900px;margin:2em auto">'
        f"<h2>{html.escape(attribution.label)} ({attribution.probability:.1%})</h2>"
        f"<p>{html.escape(text)}</p><p style='line-height:2.2'>{''.join(spans)}</p>"
        f"<p style='color:#666'>Integrated gradients; red pushes towards the label, blue away. Approximation error "
        f"{attribution.delta:.4f} logit units.</p></body>"
    )


def print_attribution(attribution: Attribution) -> None:
    """Tokens coloured in the terminal by their attribution."""
    from rich.text import Text

    from lmforge.progress import console

    peak = max((abs(s) for s in attribution.scores), default=1.0) or 1.0
    line = Text()
    for token, score in zip(attribution.tokens, attribution.scores):
        level = int(min(abs(score) / peak, 1.0) * 4)
        style = ("on red" if score > 0 else "on blue") if level >= 2 else ("red" if score > 0 else "blue") if level else ""
        line.append(token + " ", style=style)
    console.print(f"[bold]{attribution.label}[/bold] ({attribution.probability:.1%})")
    console.print(line)


def write_html(attribution: Attribution, text: str, out: str | Path) -> Path:
    path = Path(out)
    path.write_text(to_html(attribution, text), encoding="utf-8")
    return path
