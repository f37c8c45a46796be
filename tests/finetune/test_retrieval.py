"""Retrieval end to end: a text-pair directory (query, passage) from `data prepare`, bi-encoder fine-tuning
with in-batch negatives, the report's recall@k / MRR@10 next to BM25 and the model it started from (checked
by brute force), `lmforge index` over a corpus file, and `/v1/search` on a real server.

The data: real product reviews (the `reviews` corpus), each cut in two: the first half is the query and its
own second half the passage to find among the split's other second halves."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.metrics import label_ranking_average_precision_score, top_k_accuracy_score

import lmforge
from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.corpora import get_corpus
from lmforge.data.prepare import make_prepare_config, prepare
from lmforge.eval.retrieval import retrieval_metrics, retrieval_split
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.serve.config import ServeConfig
from lmforge.serve.index import VectorIndex
from lmforge.serve.server import create_app
from tests.finetune.conftest import ft_layers
from tests.serve.server_utils import running


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("halves")
    reviews = [r.text for r in get_corpus("reviews").records() if r.text and 30 <= len(r.text) <= 100][:300]
    rows = [{"question": t[: len(t) // 2], "answer": t[len(t) // 2:]} for t in reviews]
    rows[0]["question"] = rows[0]["question"][:2]  # a two-character query is a query: kept (labelled preset)
    (root / "halves.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                       encoding="utf-8")
    prepare(make_prepare_config({"input": {"paths": [str(root / "halves.jsonl")], "text_field": "question",
                                           "pair_field": "answer"},
                                 "out": str(root / "prepared"), "progress": False, "workers": 1}, source="t"))
    return root / "prepared"


def test_a_pair_file_without_labels_is_task_data(halves):
    report = json.loads((halves / "report.json").read_text())
    assert report["preset"] == "labelled" and "too_short" not in report["rejected_by_reason"]
    assert report["counts"]["accounted"]


def test_metrics_agree_with_scikit_learn_and_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.random((60, 8))  # 60 queries, a corpus of 8: MRR@10 is the full MRR
    gold = rng.integers(0, 8, 60)
    ranked = np.argsort(-scores, axis=1)
    m = retrieval_metrics(ranked.tolist(), [{int(g)} for g in gold], 8)
    for k in (1, 5):
        assert m[f"recall@{k}"] == pytest.approx(top_k_accuracy_score(gold, scores, k=k, labels=range(8)))
    assert m["recall@10"] == 1.0
    truth = np.eye(8)[gold]  # one relevant passage per query: LRAP is the mean reciprocal rank
    assert m["mrr@10"] == pytest.approx(label_ranking_average_precision_score(truth, scores))


def test_retrieval_fine_tunes_reports_indexes_and_serves(halves, base_dir, tmp_path, capsys):
    out = tmp_path / "bi"
    run = finetune(make_finetune_config(*ft_layers(out, base_dir, halves, task="retrieval", epochs=3,
                                                   report={"baselines": True}, train={"precision": "fp32"}),
                                        source="t"))
    rows = {r["name"]: r for r in run["report"]["rows"]}
    assert set(rows) == {"lmforge full", "init_from (not fine-tuned)", "bm25"}
    config = json.loads((out / "config.json").read_text())
    assert "task" not in config and config["retrieval"]["pooling"] == "mean"

    split = retrieval_split(str(halves), "test", "text", "pair")
    assert len(split.queries) == len(split.corpus) > 20  # one passage per query
    predictor = lmforge.load(out)
    q = np.asarray(predictor.embed(split.queries, normalize=True))
    p = np.asarray(predictor.embed(split.corpus, normalize=True))
    first = [min(a) for a in split.answers]
    brute = np.argsort(-(q @ p.T), axis=1)  # exact cosine ranking, by hand
    recall1 = float(np.mean(brute[:, 0] == first))
    model = rows["lmforge full"]["metrics"]
    assert model["recall@1"] == pytest.approx(recall1)
    assert model["mrr@10"] > rows["init_from (not fine-tuned)"]["metrics"]["mrr@10"]  # fine-tuning helped
    assert 0 < rows["bm25"]["metrics"]["recall@1"] <= 1

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"p{i}", "text": t}, ensure_ascii=False) + "\n"
                              for i, t in enumerate(split.corpus)) + json.dumps({"id": "e", "text": " "}) + "\n",
                      encoding="utf-8")
    assert main(["index", "--model", str(out), "--corpus", str(corpus), "--out", str(tmp_path / "index")]) == 0
    assert "1 empty passages skipped" in capsys.readouterr().out
    index = VectorIndex.load(tmp_path / "index")
    assert len(index) == len(split.corpus) and index.ids[0] == "p0"

    with running(create_app(predictor, ServeConfig(model=str(out)), index)) as url:
        reply = httpx.post(f"{url}/v1/search", json={"texts": split.queries[:3], "k": 5}, timeout=30)
    assert reply.status_code == 200
    for i, results in enumerate(reply.json()["results"]):
        assert [r["id"] for r in results] == [f"p{j}" for j in brute[i, :5]]
        assert results[0]["score"] == pytest.approx(float(q[i] @ p[brute[i, 0]]), abs=1e-5)
    with running(create_app(predictor, ServeConfig(model=str(out)))) as url:
        missing = httpx.post(f"{url}/v1/search", json={"texts": ["x"]}, timeout=30)
    assert missing.status_code == 404 and "--index" in missing.json()["error"]

    corpus.write_text('{"text": "ok"}\n{broken\n', encoding="utf-8")
    assert main(["index", "--model", str(out), "--corpus", str(corpus), "--out", str(tmp_path / "bad")]) == 2
    assert f"{corpus}:2: malformed JSON" in capsys.readouterr().err


def test_retrieval_needs_pairs_and_refuses_what_does_not_apply(reviews_small, base_dir, tmp_path):
    with pytest.raises(ConfigError, match="needs text pairs"):
        finetune(make_finetune_config(*ft_layers(tmp_path / "x", base_dir, reviews_small, task="retrieval"),
                                      source="t"))
    with pytest.raises(ConfigError, match="robust.adversarial: does not apply to task=retrieval"):
        make_finetune_config(*ft_layers(tmp_path, base_dir, reviews_small, task="retrieval",
                                        robust={"adversarial": "fgm"}), source="t")
