"""Real data for the tokenizer tests: subsets of People's Daily and of the review corpus, prepared by
`lmforge data prepare`, a WordPiece tokenizer trained on them, and their shards (session-scoped)."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest

from lmforge.corpora import get_corpus
from lmforge.data.prepare import make_prepare_config, prepare
from lmforge.tokenize.make_shards import make_tokenize_config, tokenize
from lmforge.tokenize.tokenizer import make_tokenizer_config, train_tokenizer

PD_DOCS = 3000
REVIEWS_PER_LABEL = 600


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _prepare(raw: Path, out: Path, labelled: bool) -> Path:
    layer = {"input": {"paths": [str(raw)]}, "out": str(out), "progress": False}
    if labelled:
        layer["input"]["label_field"] = "label"
    prepare(make_prepare_config(layer))
    return out


@pytest.fixture(scope="session")
def pd_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pd")
    records = islice(get_corpus("peoples-daily").records(), PD_DOCS)
    raw = _write_jsonl(root / "raw.jsonl", [{"text": r.text} for r in records])
    return _prepare(raw, root / "prepared", labelled=False)


@pytest.fixture(scope="session")
def reviews_subset_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reviews")
    counts: dict[str, int] = {}
    rows = []
    for record in get_corpus("reviews").records():
        if counts.get(record.label, 0) < REVIEWS_PER_LABEL and record.text.strip():
            counts[record.label] = counts.get(record.label, 0) + 1
            rows.append({"text": record.text, "label": record.label})
    raw = _write_jsonl(root / "raw.jsonl", rows)
    return _prepare(raw, root / "prepared", labelled=True)


@pytest.fixture(scope="session")
def wordpiece_dir(pd_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "wordpiece"
    train_tokenizer(make_tokenizer_config(
        {"data": str(pd_prepared), "kind": "wordpiece", "vocab_size": 3000, "out": str(out), "progress": False}
    ))
    return out


@pytest.fixture(scope="session")
def pd_shards(pd_prepared: Path, wordpiece_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "pd"
    # a small cap so the train split spans several shards
    tokenize(make_tokenize_config({
        "data": str(pd_prepared), "tokenizer": str(wordpiece_dir), "out": str(out),
        "shard_bytes": 100_000, "progress": False,
    }))
    return out


@pytest.fixture(scope="session")
def review_shards(reviews_subset_prepared: Path, wordpiece_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "reviews"
    tokenize(make_tokenize_config({
        "data": str(reviews_subset_prepared), "tokenizer": str(wordpiece_dir), "out": str(out), "progress": False,
    }))
    return out


def read_texts(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]
