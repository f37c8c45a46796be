"""Baselines scored on the same split as the model, so every number in a report has context.

- majority: always the most frequent training label (the floor a model must clear);
- tfidf-logreg: TF-IDF n-grams + logistic regression (scikit-learn). Character 1-3-grams for CJK
  text, which has no spaces to split words on; C=4, the setting measured in docs/data.md.
Each returns the same row as a model evaluation (see ``evaluate.prediction_row``).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Sequence

import numpy as np

from lmforge.data.prepared import read_labelled
from lmforge.data.text import is_cjk
from lmforge.eval.config import BaselinesConfig, TfidfConfig
from lmforge.eval.rows import prediction_row

__all__ = ["majority_predictions", "run_baselines", "tfidf_analyzer", "tfidf_predictions"]


def majority_predictions(
    train_labels: Sequence[str], n_test: int, labels: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """Predict the most frequent training label (ties: first in ``labels`` order) with probability 1."""
    counts = Counter(train_labels)
    best = max(labels, key=lambda label: (counts[label], -labels.index(label)))
    probs = np.zeros((n_test, len(labels)))  # (N, K)
    probs[:, labels.index(best)] = 1.0
    return [best] * n_test, probs


def tfidf_analyzer(config: TfidfConfig, texts: Sequence[str]) -> tuple[str, tuple[int, int]]:
    """('char' | 'word', ngram range) for these training texts; 'auto' looks at the majority script."""
    analyzer = config.analyzer
    if analyzer == "auto":
        sample = texts[:: max(1, len(texts) // 1000)]  # ~1000 texts decide
        analyzer = "char" if sum(is_cjk(t) for t in sample) * 2 >= len(sample) else "word"
    upper = config.ngram_max or (3 if analyzer == "char" else 2)
    return analyzer, (config.ngram_min, upper)


def tfidf_predictions(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    test_texts: Sequence[str],
    labels: Sequence[str],
    config: TfidfConfig,
    seed: int = 0,
) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """Fit TF-IDF + logistic regression on train.

    Returns predicted labels, (N, K) probabilities in ``labels`` order and the settings used.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    analyzer, ngrams = tfidf_analyzer(config, train_texts)
    vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams)
    classifier = LogisticRegression(C=config.C, max_iter=config.max_iter, random_state=seed)
    classifier.fit(vectorizer.fit_transform(train_texts), train_labels)
    seen = list(classifier.classes_)
    probs = np.zeros((len(test_texts), len(labels)))  # (N, K); labels never seen in train keep 0
    probs[:, [labels.index(c) for c in seen]] = classifier.predict_proba(vectorizer.transform(test_texts))
    predicted = [labels[i] for i in probs.argmax(axis=1)]
    settings = {
        "analyzer": analyzer,
        "ngram_range": list(ngrams),
        "C": config.C,
        "features": len(vectorizer.vocabulary_),
    }
    return predicted, probs, settings


def run_baselines(
    data_dir: str, split: str, config: BaselinesConfig, ece_bins: int = 15
) -> list[dict[str, Any]]:
    """Train every baseline on DATA/train and score it on DATA/<split>; one report row each."""
    train_texts, train_labels = read_labelled(data_dir, "train")
    test_texts, test_labels = read_labelled(data_dir, split)
    if config.max_train_examples is not None and config.max_train_examples < len(train_texts):
        keep = np.sort(
            np.random.default_rng(config.seed).permutation(len(train_texts))[: config.max_train_examples]
        )
        train_texts = [train_texts[i] for i in keep]
        train_labels = [train_labels[i] for i in keep]
    labels = sorted(set(train_labels) | set(test_labels))
    rows = []

    started = time.perf_counter()
    predicted, probs = majority_predictions(train_labels, len(test_texts), labels)
    rows.append(
        prediction_row(
            "majority",
            test_labels,
            predicted,
            probs,
            labels,
            kind="baseline",
            ece_bins=ece_bins,
            info={"train_examples": len(train_texts), "seconds": time.perf_counter() - started},
        )
    )
    started = time.perf_counter()
    predicted, probs, settings = tfidf_predictions(
        train_texts, train_labels, test_texts, labels, config.tfidf, config.seed
    )
    rows.append(
        prediction_row(
            "tfidf-logreg",
            test_labels,
            predicted,
            probs,
            labels,
            kind="baseline",
            ece_bins=ece_bins,
            info={"train_examples": len(train_texts), "seconds": time.perf_counter() - started, **settings},
        )
    )
    return rows
