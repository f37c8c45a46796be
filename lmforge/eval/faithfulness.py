"""How faithful an explanation method is, as one number: the deletion curve (Samek et al. 2017;
DeYoung et al. 2020's comprehensiveness). For each labelled text, the tokens the method ranks highest
for the predicted class are removed (replaced by padding, as the attribution baselines do), a growing
fraction at a time, and accuracy is measured at each fraction; the same with tokens removed at random.
A faithful method makes accuracy fall faster than random removal: a smaller area under its curve.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from lmforge.eval.explain import explain, model_input
from lmforge.serve.predictor import InputError, Predictor

__all__ = ["DeletionCurve", "deletion_curve"]

FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)


@dataclass
class DeletionCurve:
    method: str
    fractions: list[float]
    accuracy: list[float]  # the method's ranking removed
    random_accuracy: list[float]  # the same numbers of tokens removed at random
    area: float  # mean accuracy over the fractions: lower is more faithful
    random_area: float
    texts: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def _predicted(predictor: Predictor, ids: torch.Tensor) -> int:
    return int(predictor.model.classify(ids, torch.ones_like(ids)).argmax(-1)[0])


def sample_examples(texts: Sequence[str], gold: Sequence[str], limit: int, seed: int = 0
                    ) -> tuple[list[str], list[str]]:
    """A seeded random ``limit`` of the examples, in file order: a split's order often follows its sources
    (the review corpus lists every positive review first), so its first N may hold one label only."""
    if limit >= len(texts):
        return list(texts), list(gold)
    keep = sorted(random.Random(seed).sample(range(len(texts)), limit))
    return [texts[i] for i in keep], [gold[i] for i in keep]


def deletion_curve(predictor: Predictor, texts: Sequence[str], gold: Sequence[str], method: str = "ig",
                   fractions: Sequence[float] = FRACTIONS, seed: int = 0, **explain_args: Any) -> DeletionCurve:
    """Accuracy as the top-attributed tokens (or as many random ones) are removed."""
    if predictor.problem != "single_label":
        raise InputError(f"deletion curve: scores accuracy of one predicted class; this model is {predictor.problem}")
    rng = random.Random(seed)
    hits = [[0, 0] for _ in fractions]  # per fraction: (method, random) correct
    for text, label in zip(texts, gold):
        x = model_input(predictor, text)
        scores = explain(predictor, text, method=method, seed=seed, **explain_args).scores
        removable = [i for i in range(x.ids.shape[1]) if not bool(x.special[0, i])]
        ranked = sorted(removable, key=lambda i: -scores[i])  # most supporting the predicted class first
        shuffled = removable[:]
        rng.shuffle(shuffled)
        for f, fraction in enumerate(fractions):
            k = round(fraction * len(removable))
            for which, order in enumerate((ranked, shuffled)):
                ids = x.ids.clone()
                ids[0, order[:k]] = x.baseline[0, order[:k]]
                hits[f][which] += predictor.labels[_predicted(predictor, ids)] == label
    n = max(len(texts), 1)
    accuracy = [h[0] / n for h in hits]
    random_accuracy = [h[1] / n for h in hits]
    return DeletionCurve(method, list(fractions), accuracy, random_accuracy, sum(accuracy) / len(accuracy),
                         sum(random_accuracy) / len(random_accuracy), len(texts))
