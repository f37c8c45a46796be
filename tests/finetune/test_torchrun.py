"""`torchrun --nproc_per_node 2 -m lmforge finetune`: each process trains its share of every global
batch (train.batch_size per process, as in pretraining), rank 0 alone writes OUT, and the run equals
one process with the same global batch: the same losses, weights and test score."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import lmforge

from lmforge.finetune.stage import finetune, make_finetune_config
from tests.finetune.conftest import ft_layers

ROOT = Path(__file__).resolve().parents[2]
# no dropout: the two runs draw different random streams, and everything else must agree
EXACT = {"epochs": 2, "dropout": 0.0, "head_dropout": 0.0, "train": {"precision": "fp32", "threads": 1}}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _losses(out: Path) -> dict[int, tuple[float, int]]:
    """step -> (train loss, tokens seen so far, over all processes)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: (r["train_loss"], r["tokens"]) for r in rows if "train_loss" in r}


@pytest.mark.parametrize("method, parallel", [("full", "ddp"), ("lora", "ddp"), ("full", "fsdp")])
def test_two_processes_fine_tune_like_one_with_the_same_global_batch(method, parallel, tmp_path, base_dir,
                                                                     reviews_small):
    layers = ft_layers(tmp_path / "two", base_dir, reviews_small, method=method)
    two = _merge(_merge(layers[0], layers[1]), _merge(EXACT, {"train": {"batch_size": 8, "parallel": parallel}}))
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(two))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lmforge", "finetune", "--config", str(tmp_path / "two.yaml")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-12000:]

    one = finetune(make_finetune_config(*ft_layers(tmp_path / "one", base_dir, reviews_small, method=method),
                                        _merge(EXACT, {"train": {"batch_size": 16}}), source="t"))
    two_losses, one_losses = _losses(tmp_path / "two"), _losses(tmp_path / "one")
    assert list(two_losses) == list(one_losses) == list(range(1, one["result"].step + 1))  # one writer, every step once
    for step, (loss, tokens) in one_losses.items():
        assert two_losses[step][0] == pytest.approx(loss, rel=1e-5), step
        assert two_losses[step][1] == tokens, step  # the processes split each batch: none was seen twice
    a, b = load_file(str(tmp_path / "two" / "model.safetensors")), load_file(str(tmp_path / "one" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    reports = [json.loads((tmp_path / run / "report" / "report.json").read_text()) for run in ("two", "one")]
    scores = [next(r for r in rep["rows"] if r["kind"] == "model")["metrics"]["accuracy"] for rep in reports]
    assert scores[0] == scores[1]
    # what the processes wrote serves in one process (FSDP: gathered from the shards into the usual files)
    texts = [json.loads(line)["text"] for line in (Path(reviews_small) / "test.jsonl").read_text().splitlines()][:16]
    two_pred, one_pred = lmforge.load(tmp_path / "two").classify(texts), lmforge.load(tmp_path / "one").classify(texts)
    assert [r["label"] for r in two_pred] == [r["label"] for r in one_pred]
    metrics = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert next(r for r in metrics if "parallel" in r)["parallel"] == parallel
