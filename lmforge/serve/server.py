"""`lmforge serve`: a FastAPI app over one Predictor, on uvicorn.

/v1/search answers from a vector index (`lmforge index`, --index) with the model's embeddings.
Concurrent /v1/classify, /v1/tag and /v1/embed (and /v1/search) requests are grouped into micro-batches: an asyncio
queue per task; a worker takes every request that queued while the previous forward pass ran (up to
`max_size` texts; a request that finds the model idle waits up to `max_wait_ms` for company), runs one
forward pass in the single model thread and hands each request its rows; should that pass fail, each
request is run alone so that only the one at fault gets the error.
Bad requests get a 4xx with a one-line message: 422 for malformed JSON, wrong types, text a model cannot
read (empty, a lone surrogate, only control or zero-width characters; the field and index are named) or
an unsupported task; 413 for text or batches over the configured limits.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Optional, Sequence

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmforge.config import ConfigError
from lmforge.serve.config import ServeConfig
from lmforge.serve.index import VectorIndex
from lmforge.serve.predictor import InputError, Predictor
from lmforge.text import text_problem


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextsRequest(_Body):
    texts: list[StrictStr] = Field(description="The texts to process, in order.")


class ClassifyRequest(TextsRequest):
    text_pair: Optional[list[StrictStr]] = Field(
        None, description="Text-pair models: the second text of each pair, one per text, in order.")


class EmbedRequest(TextsRequest):
    normalize: StrictBool = False


class SearchRequest(TextsRequest):
    k: StrictInt = Field(10, ge=1, le=1000, description="Passages per query.")


class FillMaskRequest(_Body):
    text: StrictStr
    top_k: StrictInt = Field(5, ge=1, le=100)


class GenerateRequest(_Body):
    prompt: StrictStr
    max_new_tokens: StrictInt = Field(50, ge=1)
    temperature: StrictFloat | StrictInt = Field(1.0, ge=0)
    top_k: StrictInt = Field(0, ge=0)
    top_p: StrictFloat | StrictInt = Field(1.0, gt=0, le=1)
    seed: Optional[StrictInt] = None


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class MicroBatcher:
    """Collects texts from concurrent requests and answers them with one predictor call."""

    def __init__(self, run: Callable[[list[str]], list[Any]], executor: ThreadPoolExecutor, max_size: int,
                 max_wait_ms: float, stats: dict[str, float]) -> None:
        self.run, self.executor, self.max_size, self.max_wait = run, executor, max_size, max_wait_ms / 1000
        self.queue: asyncio.Queue[tuple[list[str], asyncio.Future[list[Any]]]] = asyncio.Queue()
        self.stats = stats
        self.worker: Optional[asyncio.Task[None]] = None

    async def submit(self, texts: list[str]) -> list[Any]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def loop(self) -> None:
        """Continuous batching: while one forward pass runs, new requests queue up, and the next pass
        takes all of them (up to max_size texts). A request that arrives at an idle model waits at most
        max_wait_ms for company, checking every millisecond, so a lone request is not held back long."""
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0][0])
            deadline = time.monotonic() + self.max_wait
            while size < self.max_size:
                if self.queue.empty():
                    if time.monotonic() >= deadline:
                        break
                    await asyncio.sleep(0.001)
                    continue
                item = self.queue.get_nowait()
                batch.append(item)
                size += len(item[0])
            texts = [t for item, _ in batch for t in item]
            self.stats["batches"] += 1
            self.stats["batched_texts"] += len(texts)
            loop = asyncio.get_running_loop()
            try:
                answers = await loop.run_in_executor(self.executor, self.run, texts)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one bad batch
                if len(batch) == 1:
                    self._settle(batch[0][1], error=exc)
                    continue
                # One request's texts must not fail the requests batched with it: answer each alone.
                for item, future in batch:
                    try:
                        self._settle(future, await loop.run_in_executor(self.executor, self.run, item))
                    except Exception as alone:  # noqa: BLE001 - handed to that request only
                        self._settle(future, error=alone)
                continue
            start = 0
            for item, future in batch:
                self._settle(future, answers[start:start + len(item)])
                start += len(item)

    @staticmethod
    def _settle(future: asyncio.Future[list[Any]], answers: Optional[list[Any]] = None,
                error: Optional[BaseException] = None) -> None:
        if future.done():  # the client went away
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(answers or [])


class Metrics:
    def __init__(self) -> None:
        self.count: dict[str, int] = defaultdict(int)
        self.status: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.latency_ms: dict[str, list[float]] = defaultdict(list)
        self.batching: dict[str, float] = {"batches": 0, "batched_texts": 0}

    def record(self, path: str, status: int, ms: float) -> None:
        self.count[path] += 1
        self.status[path][str(status)] += 1
        lat = self.latency_ms[path]
        lat.append(ms)
        del lat[:-10000]  # a bounded window for the percentiles

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path, n in self.count.items():
            lat = sorted(self.latency_ms[path])
            out[path] = {"requests": n, "status": dict(self.status[path]),
                         "latency_ms": {"mean": sum(lat) / len(lat), "p50": lat[len(lat) // 2],
                                        "p95": lat[min(len(lat) - 1, int(len(lat) * 0.95))], "max": lat[-1]}}
        b = self.batching
        return {"endpoints": out, "micro_batches": {"count": int(b["batches"]), "texts": int(b["batched_texts"]),
                                                    "mean_size": b["batched_texts"] / b["batches"] if b["batches"] else 0}}


class MeasureAndLimit:
    """Pure ASGI middleware: refuse a body no valid request needs before reading it (413), and time
    every request for /metrics. (Starlette's BaseHTTPMiddleware, behind @app.middleware, costs a task
    group and a body stream copy per request, which a small model's server pays on every call.)"""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        size = dict(scope["headers"]).get(b"content-length", b"0")
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if not size.isdigit() or int(size) > self.max_body:
                refusal = JSONResponse({"error": f"request body of {size.decode(errors='replace')} bytes, "
                                                 f"the limit is {self.max_body}"}, status_code=413)
                await refusal(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            self.metrics.record(scope["path"], status, (time.perf_counter() - start) * 1000)


def create_app(predictor: Predictor, config: ServeConfig, index: Optional[VectorIndex] = None) -> FastAPI:
    """The app; ``index`` (or ServeConfig.index, loaded here) answers /v1/search with this model's embeddings."""
    if index is None and config.index:
        index = VectorIndex.load(config.index)
    if index is not None and "embed" not in predictor.tasks:
        raise ConfigError(f"--index: this model cannot embed queries (it supports {', '.join(predictor.tasks)})")
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmforge-model")  # one forward pass at a time
    metrics = Metrics()
    limits, mb = config.limits, config.micro_batch
    # a valid body holds at most max_batch texts of max_chars characters (4 bytes each in UTF-8, JSON escapes aside)
    max_body = 4 * limits.max_chars * limits.max_batch + 65536
    runners: dict[str, Callable[[list[str]], list[Any]]] = {
        "classify": predictor.classify, "tag": predictor.tag, "embed": predictor.embed}
    batchers = {task: MicroBatcher(run, executor, mb.max_size, mb.max_wait_ms, metrics.batching)
                for task, run in runners.items() if task in predictor.tasks}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if mb.enabled:
            for b in batchers.values():
                b.worker = asyncio.create_task(b.loop())
        yield
        for b in batchers.values():
            if b.worker is not None:
                b.worker.cancel()
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="lmforge", description=f"Predictions from {config.model or 'a model'}", lifespan=lifespan)

    app.add_middleware(MeasureAndLimit, metrics=metrics, max_body=max_body)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ())]
        if first.get("type") == "json_invalid":
            at = f" at character {loc[1]}" if len(loc) > 1 else ""
            return JSONResponse({"error": f"malformed JSON body{at}: {first.get('ctx', {}).get('error', '')}"},
                                status_code=422)
        where = ".".join(p for p in loc if p != "body") or "body"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    def check(task: str, texts: list[str], field: str = "texts") -> None:
        """Refuse what the model cannot read here, naming the field and index, so a bad text never
        reaches the tokenizer (a lone surrogate makes it raise) or a micro-batch shared with others."""
        if task not in predictor.tasks:
            raise RequestError(422, f"this model does not support {task}; it supports: {', '.join(predictor.tasks)}")
        if not texts:
            raise RequestError(422, f"{field}: empty list")
        if len(texts) > limits.max_batch:
            raise RequestError(413, f"{field}: {len(texts)} texts, the limit is {limits.max_batch} per request")
        for i, text in enumerate(texts):
            where = f"{field}.{i}" if field in ("texts", "text_pair") else field
            if len(text) > limits.max_chars:
                raise RequestError(413, f"{where}: {len(text)} characters, the limit is {limits.max_chars}")
            problem = text_problem(text)
            if problem:
                raise RequestError(422, f"{where}: {problem}")

    async def run(task: str, texts: list[str]) -> list[Any]:
        check(task, texts)
        try:
            if mb.enabled:
                return await batchers[task].submit(texts)
            return await asyncio.get_running_loop().run_in_executor(executor, runners[task], texts)
        except InputError as exc:
            raise RequestError(422, str(exc)) from None

    @app.post("/v1/classify", summary="Label each text (or text pair)")
    async def classify(body: ClassifyRequest) -> dict[str, Any]:
        if body.text_pair is None:
            return {"results": await run("classify", body.texts)}
        if len(body.text_pair) != len(body.texts):
            raise RequestError(422, f"text_pair: {len(body.text_pair)} texts for {len(body.texts)} in texts; "
                                    f"give one second text per text")
        check("classify", body.texts)
        check("classify", body.text_pair, "text_pair")
        try:  # pairs go alone, not into the micro-batches of single texts
            return {"results": await asyncio.get_running_loop().run_in_executor(
                executor, lambda: predictor.classify(body.texts, body.text_pair))}
        except InputError as exc:
            raise RequestError(422, str(exc)) from None

    @app.post("/v1/tag", summary="Label each word of each text")
    async def tag(body: TextsRequest) -> dict[str, Any]:
        return {"results": await run("tag", body.texts)}

    @app.post("/v1/embed", summary="Mean-pooled sentence embeddings")
    async def embed(body: EmbedRequest) -> dict[str, Any]:
        vectors = await run("embed", body.texts)
        if body.normalize:
            vectors = [[x / max(sum(y * y for y in v) ** 0.5, 1e-12) for x in v] for v in vectors]
        return {"results": vectors}

    @app.post("/v1/search", summary="The index's nearest passages of each query (cosine)")
    async def search(body: SearchRequest) -> dict[str, Any]:
        if index is None:
            raise RequestError(404, "no index: start the server with --index INDEX (built by `lmforge index`)")
        vectors = await run("embed", body.texts)  # micro-batched with /v1/embed; normalised below
        q = np.asarray(vectors, dtype=np.float32)  # (Q, C)
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        scores, positions = index.search(q, body.k)
        return {"results": [[{"id": index.ids[p], "text": index.texts[p], "score": float(s), "rank": r + 1}
                             for r, (s, p) in enumerate(zip(row_s, row_p)) if p >= 0]
                            for row_s, row_p in zip(scores, positions)]}

    async def single(task: str, field: str, text: str, call: Callable[[], Any]) -> Any:
        check(task, [text], field)
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, call)
        except InputError as exc:
            raise RequestError(422, str(exc)) from None

    @app.post("/v1/fill-mask", summary="Most likely tokens for each mask token")
    async def fill_mask(body: FillMaskRequest) -> dict[str, Any]:
        return {"results": await single("fill_mask", "text", body.text, lambda: predictor.fill_mask(body.text, body.top_k))}

    @app.post("/v1/generate", summary="Continue a prompt (KV-cached sampling)")
    async def generate(body: GenerateRequest) -> dict[str, Any]:
        if body.max_new_tokens > limits.max_new_tokens:
            raise RequestError(413, f"max_new_tokens: {body.max_new_tokens}, the limit is {limits.max_new_tokens}")
        args = body.model_dump(exclude={"prompt"})
        return await single("generate", "prompt", body.prompt, lambda: predictor.generate(body.prompt, **args))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": config.model, "tasks": list(predictor.tasks),
                "micro_batching": mb.enabled, "index": len(index) if index is not None else None}

    @app.get("/metrics")
    async def metrics_view() -> dict[str, Any]:
        return metrics.snapshot()

    return app


_EXAMPLE_TEXT = "这个手机质量很好，电池也耐用"  # the built-in corpora, and the quickstart's model, are Chinese
_EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {  # task -> (endpoint, body), the most telling task first
    "classify": ("/v1/classify", {"texts": [_EXAMPLE_TEXT]}),
    "tag": ("/v1/tag", {"texts": [_EXAMPLE_TEXT]}),
    "generate": ("/v1/generate", {"prompt": _EXAMPLE_TEXT, "max_new_tokens": 20}),
    "embed": ("/v1/embed", {"texts": [_EXAMPLE_TEXT], "normalize": True}),
}


def example_request(url: str, tasks: Sequence[str]) -> str:
    """A curl command line for the server at ``url`` that exercises the model's most telling task."""
    task = next((t for t in _EXAMPLES if t in tasks), None)
    if task is None:
        return f"curl -s {url}/healthz"
    path, body = _EXAMPLES[task]
    return (f"curl -s {url}{path} -H 'content-type: application/json' "
            f"-d '{json.dumps(body, ensure_ascii=False)}'")


def serve(config: ServeConfig) -> None:
    """Load the one model this server answers for, then run uvicorn until interrupted."""
    import torch
    import uvicorn

    from lmforge.serve.predictor import load

    if not config.model:
        raise ConfigError("serve: give the model directory (--model DIR)")
    if config.threads:
        torch.set_num_threads(config.threads)
    predictor = load(config.model, batch_size=config.batch_size)
    app = create_app(predictor, config)
    url = f"http://{config.host}:{config.port}"
    print(f"lmforge: serving {config.model} ({', '.join(predictor.tasks)}) on {url} - API docs at /docs", flush=True)
    print(f"try: {example_request(url, predictor.tasks)}", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
