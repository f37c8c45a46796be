"""The thin CLI verbs: import, export, predict (arguments, --file, stdin, --json) and serve."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest

import lmforge
from lmforge.cli import main
from tests.serve.conftest import review_texts
from tests.serve.server_utils import free_port


def test_predict_prints_plain_and_json(serve_models, tmp_path, capsys, monkeypatch):
    texts = review_texts(5)
    predictor = lmforge.load(serve_models["classifier"])
    assert main(["predict", "--model", str(serve_models["classifier"]), *texts[:2]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [r["label"] for r in predictor.classify(texts[:2])]

    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert main(["predict", "--model", str(serve_models["classifier"]), "--file", str(tmp_path / "in.txt"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == texts
    assert [r["classify"]["label"] for r in rows] == [r["label"] for r in predictor.classify(texts)]

    monkeypatch.setattr(sys, "stdin", io.StringIO("质量 [MASK] 好\n"))
    assert main(["predict", "--model", str(serve_models["classifier"]), "--task", "fill-mask", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["fill_mask"][0]) == 5

    assert main(["predict", "--model", str(serve_models["decoder"]), "--temperature", "0", "--max-new-tokens", "5",
                 "这个"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == lmforge.load(serve_models["decoder"]).generate("这个", 5, 0.0)["text"]

    assert main(["predict", "--model", str(serve_models["decoder"]), "--task", "classify", "好"]) == 2
    assert "supports generate" in capsys.readouterr().err


def test_import_and_export_verbs(serve_models, tmp_path, capsys):
    assert main(["export", "--model", str(serve_models["classifier"]), "--to", "hf", "--out", str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert main(["import", "--from", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 0
    texts = review_texts(6)
    before, after = lmforge.load(serve_models["classifier"]), lmforge.load(tmp_path / "back")
    assert before.classify(texts) == after.classify(texts)  # same weights, bit for bit
    assert main(["export", "--model", str(serve_models["classifier"]), "--to", "int8", "--out", str(tmp_path / "q")]) == 0
    assert main(["import", "--from", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err


def test_serve_verb_runs_uvicorn(serve_models):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", "--model", str(serve_models["tagger"]),
                             "--port", str(port), "limits.max_batch=2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"server did not start: {proc.stdout.read() if proc.stdout else ''}")
                time.sleep(0.2)
        assert health["tasks"] == ["tag", "embed"]
        r = httpx.post(f"http://127.0.0.1:{port}/v1/tag", json={"texts": ["好", "好", "好"]})
        assert r.status_code == 413  # the key=value override reached the server's limits
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_quickstart_serve_serves_the_exported_model_on_loopback(serve_models, tmp_path, monkeypatch, capsys):
    import uvicorn
    from fastapi.testclient import TestClient

    run_dir = tmp_path / "qs"
    shutil.copytree(serve_models["classifier"], run_dir / "export")  # what the quickstart's export stage leaves
    ran, served = [], {}
    # the whole quickstart is not run here: only that --serve reaches the server with the exported directory
    monkeypatch.setattr("lmforge.pipeline.quickstart.run_pipeline", lambda pipeline, **kw: ran.append(pipeline) or [])
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: served.update(app=app, host=host, port=port))
    assert main(["quickstart", "--out", str(run_dir), "--serve", "--port", "8123", "--no-preflight"]) == 0
    assert len(ran) == 1 and served["host"] == "127.0.0.1" and served["port"] == 8123
    out = capsys.readouterr().out
    assert f"serving {run_dir / 'export'}" in out
    assert "curl -s http://127.0.0.1:8123/v1/classify" in out and '{"texts": [' in out
    texts = review_texts(3)
    with TestClient(served["app"]) as client:
        got = client.post("/v1/classify", json={"texts": texts}).json()["results"]
    assert [r["label"] for r in got] == [r["label"] for r in lmforge.load(run_dir / "export").classify(texts)]


def test_quickstart_serve_without_an_export_stage_is_refused_before_running(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("lmforge.pipeline.quickstart.run_pipeline", lambda *a, **kw: pytest.fail("ran"))
    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--serve", "export.enabled=false"]) == 2
    assert "no enabled export stage" in capsys.readouterr().err


def test_quickstart_port_without_serve_is_an_error(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--port", "9000"]) == 2
    assert "apply with --serve" in capsys.readouterr().err
