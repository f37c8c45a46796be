"""Tagging baselines on real People's Daily sentences: jieba segmentation and NER, majority tag."""

from __future__ import annotations

import itertools
import json

import pytest

from lmforge.cli import main
from lmforge.corpora import get_corpus
from lmforge.data.tagged import bmes_tags, detect_tag_task, pos_to_bio
from lmforge.eval.metrics import span_metrics, tag_spans
from lmforge.eval.tagging_baselines import jieba_predictions
from tests.utils import run_prepare


def _records(name: str, n: int) -> list:
    return [r for r in itertools.islice(get_corpus(name).records(), n) if r.text]


def test_bmes_tags_and_task_detection():
    assert bmes_tags(["迈向", "充满", "的", "新世纪"]) == list("BEBESBME")
    assert tag_spans(bmes_tags(["中国", "人民", "决心"])) == [("_", 0, 2), ("_", 2, 4), ("_", 4, 6)]
    assert detect_tag_task({"text": "x", "chars": ["x"], "tags": ["S"]}) == "segmentation"
    assert detect_tag_task({"text": "x", "words": ["x"], "pos": ["n"]}) == "ner"
    assert detect_tag_task({"text": "x", "label": "positive"}) is None


def test_jieba_segments_real_sentences_close_to_the_gold_standard():
    records = _records("peoples-daily-seg", 300)
    texts = ["".join(r.fields["chars"]) for r in records]
    gold = [r.fields["tags"] for r in records]
    assert all(len(t) == len(g) for t, g in zip(texts, gold, strict=True))
    m = span_metrics(gold, jieba_predictions(texts, "segmentation"))
    # jieba follows its own word standard, not exactly People's Daily's: good but not perfect
    assert 0.7 < m["f1"] < 0.95 and m["sequences"] == len(texts)


def test_jieba_finds_real_names():
    records = _records("peoples-daily-pos", 300)
    texts = ["".join(r.fields["words"]) for r in records]
    gold = [pos_to_bio(r.fields["words"], r.fields["pos"]) for r in records]
    predicted = jieba_predictions(texts, "ner")
    assert all(len(p) == len(t) for p, t in zip(predicted, texts, strict=True))
    m = span_metrics(gold, predicted)
    assert set(m["per_type"]) == {"PER", "LOC", "ORG"} and 0.4 < m["f1"] < 0.9
    assert m["per_type"]["PER"]["recall"] > 0.5


@pytest.mark.parametrize("corpus,task", [("peoples-daily-seg", "segmentation"), ("peoples-daily-pos", "ner")])
def test_evaluate_baselines_on_tagged_data(tmp_path, corpus, task):
    source = tmp_path / "sample.jsonl"
    with open(source, "w", encoding="utf-8") as handle:
        for r in _records(corpus, 600):
            handle.write(json.dumps({"text": r.text, **r.fields}, ensure_ascii=False) + "\n")
    data = tmp_path / "data"
    run_prepare(data, {"input": {"paths": [str(source)]}})
    out = tmp_path / "eval"
    assert main(["evaluate", "--baselines", "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    majority, jieba = report["rows"]
    assert (majority["name"], jieba["name"]) == ("majority-tag", "jieba")
    assert jieba["metrics"]["task"] == "tagging" and jieba["metrics"]["f1"] > majority["metrics"]["f1"]
    assert majority["info"]["tag"] in ({"O"} if task == "ner" else {"B", "M", "E", "S"})
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "## Summary (tagging)" in text and ("## Per entity type" in text) == (task == "ner")
