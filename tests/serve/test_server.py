"""HTTP tests against a real uvicorn server on loopback: concurrency with micro-batching, every answer equal
to the predictor's, and malformed requests answered 4xx with a clear message, never 500."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import lmforge
from lmforge.serve.config import ServeConfig
from lmforge.serve.server import MicroBatcher, create_app
from tests.serve.conftest import review_texts
from tests.serve.server_utils import running


def _config(model, **kw) -> ServeConfig:
    return ServeConfig(model=str(model), limits={"max_chars": 300, "max_batch": 8}, **kw)


@pytest.fixture(scope="module")
def classifier_server(serve_models):
    predictor = lmforge.load(serve_models["classifier"])
    cfg = _config(serve_models["classifier"], micro_batch={"max_size": 16, "max_wait_ms": 10})
    with running(create_app(predictor, cfg)) as url:
        yield url, predictor


def _close(a, b) -> None:
    assert a["label"] == b["label"]
    assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_fifty_concurrent_clients_get_the_predictors_answers(classifier_server):
    url, predictor = classifier_server
    texts = [t[:300] for t in review_texts(120)]
    requests = [texts[i:i + 1 + i % 3] for i in range(50)]  # 1 to 3 texts each, different lengths

    async def go():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/classify", json={"texts": r}) for r in requests))

    responses = asyncio.run(go())
    assert [r.status_code for r in responses] == [200] * 50
    for texts_sent, response in zip(requests, responses):
        for got, expected in zip(response.json()["results"], predictor.classify(texts_sent), strict=True):
            _close(got, expected)
    metrics = httpx.get(f"{url}/metrics").json()
    assert metrics["endpoints"]["/v1/classify"]["requests"] >= 50
    assert metrics["endpoints"]["/v1/classify"]["status"]["200"] >= 50
    assert metrics["micro_batches"]["mean_size"] > 1  # requests really were grouped
    assert metrics["endpoints"]["/v1/classify"]["latency_ms"]["p95"] > 0


def test_other_endpoints(classifier_server):
    url, predictor = classifier_server
    with httpx.Client(base_url=url, timeout=30) as c:
        health = c.get("/healthz").json()
        assert health["status"] == "ok" and health["tasks"] == ["classify", "fill_mask", "embed"]
        emb = c.post("/v1/embed", json={"texts": ["质量 很好"], "normalize": True}).json()["results"][0]
        assert emb == pytest.approx(predictor.embed(["质量 很好"], normalize=True)[0], abs=1e-5)
        fm = c.post("/v1/fill-mask", json={"text": "质量 [MASK] 好", "top_k": 2}).json()["results"]
        assert [x["id"] for x in fm[0]] == [x["id"] for x in predictor.fill_mask("质量 [MASK] 好", 2)[0]]
        assert "/v1/classify" in c.get("/openapi.json").json()["paths"]
        assert c.get("/docs").status_code == 200


MALFORMED = [
    ("post", "/v1/classify", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "malformed JSON"),
    ("post", "/v1/classify", {"json": {"text": "missing the texts key"}}, 422, "texts"),
    ("post", "/v1/classify", {"json": {"texts": "a string, not a list"}}, 422, "texts"),
    ("post", "/v1/classify", {"json": {"texts": [1, 2]}}, 422, "texts.0"),
    ("post", "/v1/classify", {"json": {"texts": [None]}}, 422, "texts.0"),
    ("post", "/v1/classify", {"json": [1, 2, 3]}, 422, "body"),
    ("post", "/v1/classify", {"json": {"texts": []}}, 422, "empty list"),
    ("post", "/v1/classify", {"json": {"texts": ["ok", "  "]}}, 422, "texts.1: empty text"),
    ("post", "/v1/classify", {"json": {"texts": ["长" * 301]}}, 413, "301 characters, the limit is 300"),
    ("post", "/v1/classify", {"json": {"texts": ["好"] * 9}}, 413, "the limit is 8"),
    ("post", "/v1/classify", {"json": {"texts": ["好"], "extra": 1}}, 422, "extra"),
    ("post", "/v1/embed", {"json": {"texts": ["好"], "normalize": "yes"}}, 422, "normalize"),
    ("post", "/v1/fill-mask", {"json": {"text": "没有 掩码"}}, 422, "no [MASK] token"),
    ("post", "/v1/fill-mask", {"json": {"text": "[MASK]", "top_k": 0}}, 422, "top_k"),
    ("post", "/v1/tag", {"json": {"texts": ["好"]}}, 422, "does not support tag"),
    ("post", "/v1/generate", {"json": {"prompt": "好"}}, 422, "does not support generate"),
    ("get", "/v1/classify", {}, 405, "Method Not Allowed"),
    ("post", "/v1/nothing", {"json": {}}, 404, "Not Found"),
    ("post", "/v1/classify", {"content": b"texts=a", "headers": {"content-type": "text/plain"}}, 422, ""),
    ("post", "/v1/classify", {"content": b"{" + b" " * 200_000 + b"}", "headers": {"content-type": "application/json"}},
     413, "the limit is"),
]


def test_malformed_requests_are_4xx_with_a_message(classifier_server):
    url, _ = classifier_server
    with httpx.Client(base_url=url, timeout=30) as c:
        for method, path, kwargs, status, fragment in MALFORMED:
            r = getattr(c, method)(path, **kwargs)
            assert r.status_code == status, (path, kwargs, r.status_code, r.text)
            assert fragment in r.json()["error"], (path, kwargs, r.text)
        metrics = c.get("/metrics").json()["endpoints"]
    assert all("500" not in m["status"] for m in metrics.values())


def test_decoder_server_generates_like_the_predictor_and_batching_can_be_off(serve_models):
    predictor = lmforge.load(serve_models["decoder"])
    cfg = _config(serve_models["decoder"], micro_batch={"enabled": False})
    with running(create_app(predictor, cfg)) as url, httpx.Client(base_url=url, timeout=30) as c:
        body = {"prompt": "这个手机", "max_new_tokens": 8, "temperature": 0.8, "top_k": 10, "seed": 5}
        r = c.post("/v1/generate", json=body)
        assert r.status_code == 200
        assert r.json() == predictor.generate("这个手机", 8, 0.8, 10, 1.0, 5)
        assert c.post("/v1/generate", json={**body, "max_new_tokens": 10_000}).status_code == 413
        assert c.post("/v1/generate", json={**body, "temperature": "hot"}).status_code == 422
        assert c.post("/v1/generate", json={**body, "top_p": 1.5}).status_code == 422
        assert c.post("/v1/classify", json={"texts": ["好"]}).status_code == 422
        assert c.get("/healthz").json()["micro_batching"] is False


BAD_TEXTS = ["bad \ud800 text", "\x00\x00\x00", "\u200b\u200d\ufeff", "\x01\x07\x1b ", "\t\u2028\u3000"]


def test_concurrent_requests_with_bad_texts_get_422_and_their_neighbours_answers(classifier_server):
    url, predictor = classifier_server
    good = [t[:300] for t in review_texts(40)]
    requests = []
    for i in range(25):  # every fifth request carries one bad text among good ones
        texts = good[i:i + 1 + i % 3]
        if i % 5 == 2:
            texts = [*texts[:1], BAD_TEXTS[(i // 5) % len(BAD_TEXTS)], *texts[1:]]
        requests.append(texts)

    async def go():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            # json.dumps escapes the lone surrogate as \ud800, as a JSON client would send it
            return await asyncio.gather(*(client.post("/v1/classify", content=json.dumps({"texts": r}),
                                                      headers={"content-type": "application/json"})
                                          for r in requests))

    responses = asyncio.run(go())
    for i, (texts_sent, response) in enumerate(zip(requests, responses)):
        if i % 5 == 2:
            assert response.status_code == 422, response.text
            assert response.json()["error"].startswith("texts.1: "), response.text
        else:
            assert response.status_code == 200, response.text
            for got, expected in zip(response.json()["results"], predictor.classify(texts_sent), strict=True):
                _close(got, expected)
    assert "surrogate" in responses[2].json()["error"] and "visible" in responses[7].json()["error"]
    metrics = httpx.get(f"{url}/metrics").json()["endpoints"]
    assert all("500" not in m["status"] for m in metrics.values())


def test_a_request_that_fails_in_a_micro_batch_fails_alone():
    def run(texts: list[str]) -> list[str]:
        if "poison" in texts:
            raise RuntimeError("the model cannot take this one")
        return [t.upper() for t in texts]

    async def go():
        batcher = MicroBatcher(run, ThreadPoolExecutor(max_workers=1), max_size=64, max_wait_ms=50,
                               stats={"batches": 0, "batched_texts": 0})
        batcher.worker = asyncio.create_task(batcher.loop())
        try:
            return await asyncio.gather(*(batcher.submit(r) for r in (["a"], ["b", "poison"], ["c", "d"])),
                                        return_exceptions=True), batcher.stats
        finally:
            batcher.worker.cancel()

    results, stats = asyncio.run(go())
    assert results[0] == ["A"] and results[2] == ["C", "D"]
    assert isinstance(results[1], RuntimeError)
    assert stats["batches"] == 1  # the three were one batch, then retried one request at a time
