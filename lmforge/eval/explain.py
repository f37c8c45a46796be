"""Token attributions for a classifier's prediction, by one of four methods (``method``):

- ``ig``: integrated gradients (Sundararajan et al. 2017). The path runs in embedding space from a
  baseline (every token replaced by padding, the special tokens kept) to the real input; each token's
  attribution is (x - x') . mean gradient along the path, summed over the embedding width. They add up
  to f(x) - f(baseline) for the explained logit (completeness); ``delta`` says how far the Riemann sum is.
- ``shap``: Kernel SHAP (Lundberg & Lee 2017) and ``lime``: LIME (Ribeiro et al. 2016), Captum's
  implementations, over the tokens as features: a token is present or replaced by padding (the same
  baseline), ``samples`` model calls; SHAP values also add up to f(x) - f(baseline), up to sampling.
- ``attention``: the attention the pooled position(s) pay each token in the last block, averaged over
  heads (lmforge.eval.attention_maps draws every layer and head); not signed, not in logit units.

Every method explains the input ``classify`` really sees (its truncation), for every fine-tuning
method's model directory, and lmforge.eval.faithfulness compares them by a deletion curve.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from lmforge.config import ConfigError
from lmforge.serve.predictor import InputError, Predictor

METHODS = ("ig", "shap", "lime", "attention")


@dataclass
class Attribution:
    tokens: list[str]
    scores: list[float]  # one per token (ig, shap, lime: logit units; attention: attention weight)
    label: str  # the explained class
    probability: float  # the model's probability for it on the real input
    delta: float  # |sum(scores) - (f(x) - f(baseline))| (ig, shap); 0 where it does not apply
    method: str = "ig"


@dataclass
class _Input:
    ids: Tensor  # (1, T) what classify feeds the model
    mask: Tensor  # (1, T)
    special: Tensor  # (1, T) bool: [CLS], [SEP] and the like, never removed
    baseline: Tensor  # (1, T) every other token replaced by padding
    tokens: list[str]


def model_input(predictor: Predictor, text: str) -> _Input:
    if predictor.model.task != "classification":
        raise InputError("explain needs a classification model (its config.json task is not 'classification')")
    token_ids, tokens, special_mask = predictor.classify_input(text)  # what classify sees (its truncation)
    ids = torch.tensor([token_ids])  # (1, T)
    special = torch.tensor([[bool(m) for m in special_mask]])  # (1, T)
    baseline = torch.where(special, ids, torch.full_like(ids, predictor.pad_id))
    return _Input(ids, torch.ones_like(ids), special, baseline, tokens)


def explain(predictor: Predictor, text: str, target: Optional[str] = None, steps: int = 50, method: str = "ig",
            samples: int = 200, seed: int = 0) -> Attribution:
    """Attributions of ``text``'s tokens to the logit of ``target`` (default: the predicted class)."""
    if method not in METHODS:
        raise InputError(f"explain method {method!r}: expected one of {', '.join(METHODS)}")
    x = model_input(predictor, text)
    model = predictor.model
    with torch.no_grad():
        probs = predictor.outputs(model.classify(x.ids, x.mask))[0]  # (L,) probabilities (regression: the value)
    index = int(probs.argmax()) if target is None else _label_index(predictor.labels, target)
    if method == "ig":
        scores, delta = _integrated_gradients(predictor, x, index, steps)
    elif method == "attention":
        from lmforge.eval.attention_maps import attention_received

        scores, delta = attention_received(predictor, x.ids, x.mask), 0.0
    else:
        scores, delta = _perturbation(method, predictor, x, index, samples, seed)
    return Attribution(x.tokens, [float(s) for s in scores], predictor.labels[index], float(probs[index]), delta,
                       method)


def _integrated_gradients(predictor: Predictor, x: _Input, index: int, steps: int) -> tuple[Tensor, float]:
    model = predictor.model
    embed = model.backbone.embed.tokens
    ids, mask = x.ids, x.mask
    with torch.no_grad():
        real = embed(ids)  # (1, T, C)
        base = embed(x.baseline)  # (1, T, C)
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
    return scores, _completeness_gap(predictor, x, index, scores)


def _completeness_gap(predictor: Predictor, x: _Input, index: int, scores: Tensor) -> float:
    with torch.no_grad():
        ends = predictor.model.classify(torch.cat([x.ids, x.baseline]), x.mask.expand(2, -1))[:, index]  # f(x), f(x')
    return abs(float(scores.sum()) - float(ends[0] - ends[1]))


def _perturbation(method: str, predictor: Predictor, x: _Input, index: int, samples: int,
                  seed: int) -> tuple[Tensor, float]:
    """Kernel SHAP or LIME (Captum) with each token a feature, present or replaced by padding."""
    try:
        from captum.attr import KernelShap, Lime
    except ImportError:
        raise ConfigError(f"explain --method {method} needs Captum: pip install 'lmforge[explain]'") from None
    model = predictor.model

    def logit(ids: Tensor) -> Tensor:  # (S, T) token ids, some replaced by padding -> (S,) explained logit
        with torch.no_grad():
            return model.classify(ids, x.mask.expand(len(ids), -1)).float()[:, index]

    if method == "shap":
        explainer = KernelShap(logit)
    else:  # Captum's default surrogate is a Lasso, which zeroes every weight of a model with small logit moves
        from captum._utils.models.linear_model import SkLearnRidge

        explainer = Lime(logit, interpretable_model=SkLearnRidge(alpha=1e-3))
    features = torch.arange(x.ids.shape[1])[None]  # (1, T): every token its own feature
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # Captum draws its coalitions from torch's generator
        scores = explainer.attribute(x.ids, baselines=x.baseline, feature_mask=features, n_samples=samples,
                                     perturbations_per_eval=min(samples, 64))[0].float()  # (T,)
    scores = torch.where(x.special[0], torch.zeros_like(scores), scores)  # never perturbed: no share
    return scores, _completeness_gap(predictor, x, index, scores) if method == "shap" else 0.0


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
        f"<p style='color:#666'>{_METHOD_NAMES[attribution.method]}; red pushes towards the label, blue away"
        f"{_gap_note(attribution)}.</p></body>"
    )


_METHOD_NAMES = {"ig": "Integrated gradients", "shap": "Kernel SHAP (Captum)", "lime": "LIME (Captum)",
                 "attention": "Last-layer attention received (mean over heads)"}


def _gap_note(attribution: Attribution) -> str:
    if attribution.method not in ("ig", "shap"):
        return ""
    return f". Completeness gap {attribution.delta:.4f} logit units"


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
