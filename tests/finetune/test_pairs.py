"""Text pairs end to end: `data prepare --pair-field` (dedup and label conflicts keyed on the pair, the
same question never in two splits, checked by brute force), fine-tuning on both texts with segment
ids, a TF-IDF baseline that sees both sides, `Predictor.classify(pairs=...)`, `lmforge predict --pair`
and `/v1/classify` with `text_pair` on a real server.

The data: question matching derived from real product reviews (the `reviews` corpus): the first half
of a review is the question, its own second half the matching answer, and the second halves of two
other reviews are non-matching candidates; so every question comes with three candidates and two labels."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest
import torch

import lmforge
from lmforge.cli import main
from lmforge.corpora import get_corpus
from lmforge.data.prepare import make_prepare_config, prepare
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.serve.config import ServeConfig
from lmforge.serve.server import create_app
from tests.finetune.conftest import ft_layers
from tests.serve.server_utils import running


def _matching_rows(n_questions: int = 120, seed: int = 0) -> list[dict]:
    reviews = [r.text for r in get_corpus("reviews").records() if r.text and 30 <= len(r.text) <= 120][:n_questions]
    rng = random.Random(seed)
    rows = []
    for i, text in enumerate(reviews):
        question, answer = text[: len(text) // 2], text[len(text) // 2:]
        rows.append({"question": question, "candidate": answer, "label": "match"})
        for j in rng.sample([k for k in range(len(reviews)) if k != i], 2):
            rows.append({"question": question, "candidate": reviews[j][len(reviews[j]) // 2:], "label": "other"})
    return rows


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("pairs")
    rows = _matching_rows()
    (root / "pairs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    config = make_prepare_config({"input": {"paths": [str(root / "pairs.jsonl")], "text_field": "question",
                                            "label_field": "label", "pair_field": "candidate"},
                                  "out": str(root / "prepared"), "progress": False, "workers": 1}, source="t")
    prepare(config)
    return root, rows


def _split_rows(data: Path) -> dict[str, list[dict]]:
    return {s: [json.loads(line) for line in open(data / f"{s}.jsonl", encoding="utf-8")]
            for s in ("train", "validation", "test")}


def test_prepare_keeps_every_pair_and_never_splits_a_question(pairs_dir):
    root, rows = pairs_dir
    splits = _split_rows(root / "prepared")
    rejected = [json.loads(line) for line in open(root / "prepared" / "rejected.jsonl", encoding="utf-8")]
    assert sum(map(len, splits.values())) + len(rejected) == len(rows)  # every record accounted for
    assert not [r for r in rejected if r["reason"] == "label_conflict"]  # one question, two labels: no conflict
    assert all(len(s) for s in splits.values()) and all("pair" in r for s in splits.values() for r in s)
    seen: dict[str, set[str]] = {}
    for split, members in splits.items():  # brute force: every question in one split only
        for r in members:
            seen.setdefault(r["text"], set()).add(split)
    assert all(len(where) == 1 for where in seen.values())
    assert json.loads((root / "prepared" / "DONE").read_text())["fields"]["pair"] == "pair"

    # the same file read as single texts: the question alone is the text, and its three candidates'
    # two labels quarantine it as a label conflict (what happened before --pair-field existed)
    single = make_prepare_config({"input": {"paths": [str(root / "pairs.jsonl")], "text_field": "question",
                                            "label_field": "label"},
                                  "out": str(root / "single"), "progress": False, "workers": 1}, source="t")
    report = prepare(single)
    assert report["dedup"]["conflict_documents"] > len(rows) // 2


def test_pairs_fine_tune_evaluate_predict_and_serve(pairs_dir, tmp_path, base_dir, capsys):
    root, _ = pairs_dir
    out = tmp_path / "ft"
    result = finetune(make_finetune_config(*ft_layers(out, base_dir, root / "prepared", epochs=1,
                                                      report={"baselines": True}), source="t"))
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["pair_field"] == "pair"  # found in the prepared directory, recorded with the model
    tfidf = next(r for r in result["report"]["rows"] if r["name"] == "tfidf-logreg")
    assert tfidf["info"]["pairs"] == "both sides and their product"

    test = _split_rows(root / "prepared")["test"]
    texts, pairs = [r["text"] for r in test[:6]], [r["pair"] for r in test[:6]]
    predictor = lmforge.load(out)
    answers = predictor.classify(texts, pairs)
    enc = predictor.tokenizer.encode(texts[0], pairs[0])
    assert 0 < sum(enc.type_ids) < len(enc.ids)  # the second text carries segment id 1
    ids, types = torch.tensor([enc.ids]), torch.tensor([enc.type_ids])
    with torch.no_grad():
        direct = predictor.model.classify(ids, torch.ones_like(ids), types).softmax(-1)[0]
    assert answers[0]["score"] == pytest.approx(float(direct.max()), abs=1e-5)
    alone = predictor.classify(texts[0], pairs[0])  # one pair: the same answer, without batch padding
    assert alone["label"] == answers[0]["label"] and alone["score"] == pytest.approx(answers[0]["score"], abs=1e-6)
    singles = predictor.classify(texts)
    assert [a["scores"] for a in singles] != [a["scores"] for a in answers]  # the second text is read

    lines = [f"{a}\t{b}" for a, b in zip(texts[:2], pairs[:2])]
    assert main(["predict", "--model", str(out), "--pair", "--json", *lines]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(p["pair"], p["classify"]["label"]) for p in printed] == [(b, a["label"]) for b, a in zip(pairs[:2], answers)]
    assert main(["predict", "--model", str(out), "--pair", "no tab here"]) == 2
    assert "has no TAB" in capsys.readouterr().err

    with running(create_app(predictor, ServeConfig(model=str(out)))) as url:
        reply = httpx.post(f"{url}/v1/classify", json={"texts": texts, "text_pair": pairs}, timeout=30)
        short = httpx.post(f"{url}/v1/classify", json={"texts": texts, "text_pair": pairs[:2]}, timeout=30)
    assert reply.status_code == 200
    for got, want in zip(reply.json()["results"], answers):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=1e-6)
    assert short.status_code == 422 and "one second text per text" in short.json()["error"]


def test_two_questions_sharing_a_long_candidate_are_two_examples(tmp_path):
    """Near duplicates of pairs need both sides alike: a long review shared by two short, different
    questions (one match, one not) is no label conflict; the same pair twice with two labels still is."""
    long_reviews = [r.text for r in get_corpus("reviews").records() if r.text and len(r.text) >= 150][:3]
    short = [r.text for r in get_corpus("reviews").records() if r.text and 6 <= len(r.text) <= 12][:4]
    rows = [{"question": short[0], "candidate": long_reviews[0], "label": "match"},
            {"question": short[1], "candidate": long_reviews[0], "label": "other"},
            {"question": short[2], "candidate": long_reviews[1], "label": "match"},
            {"question": short[2], "candidate": long_reviews[1], "label": "other"},  # a real conflict
            {"question": short[3], "candidate": long_reviews[2], "label": "match"},
            {"question": short[3], "candidate": long_reviews[2] + "。", "label": "match"}]  # a near duplicate
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    prepare(make_prepare_config({"input": {"paths": [str(tmp_path / "p.jsonl")], "text_field": "question",
                                           "label_field": "label", "pair_field": "candidate"},
                                 "dedup": {"exact": False},  # the near-duplicate rule alone decides
                                 "out": str(tmp_path / "out"), "progress": False, "workers": 1}, source="t"))
    rejected = {(r["text"], r["reason"]) for r in map(json.loads, open(tmp_path / "out" / "rejected.jsonl", encoding="utf-8"))}
    assert (short[0], "label_conflict") not in rejected and (short[1], "label_conflict") not in rejected
    assert (short[2], "label_conflict") in rejected
    assert (short[3], "near_duplicate") in rejected
