"""Baselines scored on the same split as the model, so every number in a report has context.

- majority: always the most frequent training label (the floor a model must clear);
- tfidf-logreg: TF-IDF n-grams + logistic regression (scikit-learn). Character 1-3-grams for CJK
  text, which has no spaces to split words on; C=4, the setting measured in docs/data.md. For text
  pairs it sees both sides: [tfidf(a), tfidf(b), tfidf(a) * tfidf(b)] with one vocabulary, the last
  block being the n-grams the two texts share (what matching a question to an answer turns on).
Multi-label labels (a set per text): prior (each label's train frequency as its probability) and
tfidf-logreg one-vs-rest, its per-label thresholds tuned on the validation split as fine-tuning tunes a
model's. Regression: mean (the train mean) and tfidf-ridge (ridge regression, alpha 1, on the same features).
Each returns the same row as a model evaluation (lmforge.eval.rows).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Sequence

import numpy as np

from lmforge.data.examples import read_classification, subset_indices
from lmforge.data.prepared import pair_field
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
    train_pairs: Sequence[str] | None = None,
    test_pairs: Sequence[str] | None = None,
) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """Fit TF-IDF + logistic regression on train (text pairs: on both sides and their product).

    Returns predicted labels, (N, K) probabilities in ``labels`` order and the settings used.
    """
    from sklearn.linear_model import LogisticRegression

    features, settings = _features(config, train_texts, train_pairs)
    classifier = LogisticRegression(C=config.C, max_iter=config.max_iter, random_state=seed)
    classifier.fit(features(train_texts, train_pairs), train_labels)
    seen = list(classifier.classes_)
    probs = np.zeros((len(test_texts), len(labels)))  # (N, K); labels never seen in train keep 0
    probs[:, [labels.index(c) for c in seen]] = classifier.predict_proba(features(test_texts, test_pairs))
    predicted = [labels[i] for i in probs.argmax(axis=1)]
    settings = {**settings, "C": config.C,
                **({"pairs": "both sides and their product"} if train_pairs is not None else {})}
    return predicted, probs, settings


def _features(config: TfidfConfig, train_texts: Sequence[str], train_pairs: Sequence[str] | None) -> tuple[Any, dict]:
    """A TF-IDF featuriser fitted on the train texts (both sides of pairs): (texts, pairs) -> sparse
    (N, F), or for pairs (N, 3F) = [tfidf(a), tfidf(b), tfidf(a) * tfidf(b)]; and its settings."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    analyzer, ngrams = tfidf_analyzer(config, train_texts)
    vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams)
    vectorizer.fit([*train_texts, *(train_pairs or [])])

    def features(texts: Sequence[str], pairs: Sequence[str] | None) -> Any:
        if train_pairs is None:
            return vectorizer.transform(texts)
        a, b = vectorizer.transform(texts), vectorizer.transform(pairs)  # (N, F) each
        return hstack([a, b, a.multiply(b)]).tocsr()  # (N, 3F)

    settings = {"analyzer": analyzer, "ngram_range": list(ngrams),
                "features": len(vectorizer.vocabulary_) * (1 if train_pairs is None else 3)}
    return features, settings


def _multilabel_baselines(data_dir: str, split: str, pair: str | None, config: BaselinesConfig,
                          train: tuple, test: tuple) -> list[dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from lmforge.eval.multilabel import indicator, tune_thresholds
    from lmforge.eval.rows import multilabel_row

    (train_texts, train_pairs, train_sets), (test_texts, test_pairs, test_sets) = train, test
    labels = sorted({x for row in [*train_sets, *test_sets] for x in row})
    truth = indicator(train_sets, labels)  # (N, K)
    info = {"train_examples": len(train_texts)}
    started = time.perf_counter()
    prior = np.tile(truth.mean(0), (len(test_texts), 1))  # (M, K)
    rows = [multilabel_row("prior", test_sets, prior, labels, kind="baseline",
                           info={**info, "seconds": time.perf_counter() - started})]
    started = time.perf_counter()
    features, settings = _features(config.tfidf, train_texts, train_pairs if pair else None)
    seen = truth.sum(0) > 0  # a label only the test split has: probability 0
    model = OneVsRestClassifier(LogisticRegression(C=config.tfidf.C, max_iter=config.tfidf.max_iter,
                                                   random_state=config.seed))
    model.fit(features(train_texts, train_pairs if pair else None), truth[:, seen])

    def probabilities(texts: Sequence[str], pairs: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(labels)))
        out[:, seen] = model.predict_proba(features(texts, pairs if pair else None))
        return out

    val_texts, val_pairs, val_sets = read_classification(data_dir, "validation", "text", pair, kind="multi")
    cut = tune_thresholds(indicator(val_sets, labels), probabilities(val_texts, val_pairs))
    rows.append(multilabel_row("tfidf-logreg", test_sets, probabilities(test_texts, test_pairs), labels, cut,
                               kind="baseline", info={**info, "seconds": time.perf_counter() - started,
                                                      "C": config.tfidf.C, "thresholds": "tuned on validation",
                                                      **settings}))
    return rows


def _regression_baselines(pair: str | None, config: BaselinesConfig, train: tuple, test: tuple) -> list[dict[str, Any]]:
    from sklearn.linear_model import Ridge

    from lmforge.eval.rows import regression_row

    (train_texts, train_pairs, train_y), (test_texts, test_pairs, test_y) = train, test
    info = {"train_examples": len(train_texts)}
    started = time.perf_counter()
    rows = [regression_row("mean", test_y, [float(np.mean(train_y))] * len(test_y), kind="baseline",
                           info={**info, "seconds": time.perf_counter() - started})]
    started = time.perf_counter()
    features, settings = _features(config.tfidf, train_texts, train_pairs if pair else None)
    model = Ridge(alpha=1.0).fit(features(train_texts, train_pairs if pair else None), train_y)
    predicted = model.predict(features(test_texts, test_pairs if pair else None))
    rows.append(regression_row("tfidf-ridge", test_y, predicted.tolist(), kind="baseline",
                               info={**info, "seconds": time.perf_counter() - started, "alpha": 1.0, **settings}))
    return rows


def _label_kind(data_dir: str, task: str | None) -> str:
    if task is not None:
        return {"multilabel": "multi", "regression": "value"}.get(task, "single")
    from lmforge.data.prepared import iter_split

    first = next(iter(iter_split(data_dir, "train")), {})
    return "multi" if isinstance(first.get("label"), list) else "single"


def run_baselines(
    data_dir: str, split: str, config: BaselinesConfig, ece_bins: int = 15, task: str | None = None
) -> list[dict[str, Any]]:
    """Train every baseline on DATA/train and score it on DATA/<split>; one report row each. ``task``:
    classification, multilabel or regression (None: multilabel when the labels are lists)."""
    pair = pair_field(data_dir)
    kind = _label_kind(data_dir, task)
    train_texts, train_pairs, train_labels = read_classification(data_dir, "train", "text", pair, kind=kind)  # type: ignore[arg-type]
    test_texts, test_pairs, test_labels = read_classification(data_dir, split, "text", pair, kind=kind)  # type: ignore[arg-type]
    if config.max_train_examples is not None and config.max_train_examples < len(train_texts):
        keep = subset_indices(len(train_texts), config.max_train_examples, config.seed)
        train_texts = [train_texts[i] for i in keep]
        train_pairs = [train_pairs[i] for i in keep]
        train_labels = [train_labels[i] for i in keep]
    train, test = (train_texts, train_pairs, train_labels), (test_texts, test_pairs, test_labels)
    if kind == "multi":
        return _multilabel_baselines(data_dir, split, pair, config, train, test)
    if kind == "value":
        return _regression_baselines(pair, config, train, test)
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
        train_texts, train_labels, test_texts, labels, config.tfidf, config.seed,
        train_pairs if pair else None, test_pairs if pair else None,  # type: ignore[arg-type]
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
