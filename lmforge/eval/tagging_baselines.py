"""Baselines for the tagging tasks, scored with span F1 on the same split as a tagging model.

- majority-tag: the most frequent training tag on every character (all 'O' for NER: the floor);
- jieba: jieba's dictionary + HMM segmenter for word segmentation (BMES), and jieba.posseg's
  nr/ns/nt part-of-speech tags as a person/place/organisation recogniser for NER.
jieba is not trained on our train split: its dictionary was built from other corpora that may
include People's Daily 1998 itself, so its scores are a reference point, not a leak-free baseline.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from functools import lru_cache
from typing import Any, Sequence

from lmforge.data.tagged import TagTask, bmes_tags, pos_to_bio, read_tagged
from lmforge.eval.rows import tagging_row

__all__ = ["run_tagging_baselines"]


# jieba.posseg flags (ICTCLAS set) for names: nrt transliterated and nrfg other person names,
# nsf transliterated places.
JIEBA_ENTITIES = {"nr": "PER", "nrt": "PER", "nrfg": "PER", "ns": "LOC", "nsf": "LOC", "nt": "ORG"}


@lru_cache(maxsize=1)
def _jieba() -> Any:
    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()  # private: leaves the global jieba state to the user
    return tokenizer, jieba.posseg.POSTokenizer(tokenizer)


def jieba_predictions(texts: Sequence[str], task: TagTask) -> list[list[str]]:
    """Tag sequences from jieba, one tag per character of each text."""
    tokenizer, pos_tokenizer = _jieba()
    if task == "segmentation":
        return [bmes_tags(tokenizer.lcut(text)) for text in texts]
    predicted = []
    for text in texts:
        pairs = pos_tokenizer.lcut(text)
        # jieba tags a full name as one nr word, so no merging of neighbours is needed here
        predicted.append(
            pos_to_bio([p.word for p in pairs], [p.flag for p in pairs], JIEBA_ENTITIES, merge=())
        )
    return predicted


def run_tagging_baselines(directory: str, split: str, task: TagTask) -> list[dict[str, Any]]:
    """Report rows (see ``evaluate.tagging_row``) for the majority tag and jieba on DATA/<split>."""
    _, train_gold = read_tagged(directory, "train", task)
    texts, gold = read_tagged(directory, split, task)
    started = time.perf_counter()
    top = Counter(tag for tags in train_gold for tag in tags).most_common(1)[0][0]
    rows = [
        tagging_row(
            "majority-tag",
            gold,
            [[top] * len(tags) for tags in gold],
            kind="baseline",
            info={"tag": top, "seconds": time.perf_counter() - started},
        )
    ]
    started = time.perf_counter()
    predicted = jieba_predictions(texts, task)
    rows.append(
        tagging_row(
            "jieba",
            gold,
            predicted,
            kind="baseline",
            info={"trained_on": "jieba's own dictionary", "seconds": time.perf_counter() - started},
        )
    )
    return rows
