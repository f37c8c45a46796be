"""The pre-flight plan: predictions checked against a real run of the same config, warnings, the CLI."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from lmforge.cli import main
from lmforge.config import load_config_file
from lmforge.pipeline.preflight import _plan_pretrain
from lmforge.train.data import TensorBlockSource
from lmforge.train.pretrain import make_pretrain_config, pretrain
from tests.lmcorpus import corpus  # noqa: F401  (a session fixture)
from tests.train.test_pretrain import _meta

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path, **train):
    return make_pretrain_config(
        load_config_file(ROOT / "configs" / "pretrain-tiny.yaml"),
        {"out": str(tmp_path / "run"), "data": {"seq_len": 64},
         "model": {"n_layers": 2, "d_model": 64, "n_heads": 4, "d_ff": 256, "max_positions": 64},
         "embedding_init": {"kind": "random"},
         "train": {"steps": 100_000, "batch_size": 16, "precision": "fp32", "threads": 1, "progress": False,
                   "tensorboard": False, "eval_every": None, "checkpoint_every": None, "log_every": 50,
                   **train}},
        source="test")


def test_predicted_steps_match_a_real_run_within_25_percent(corpus, tmp_path):
    """Plan, then run the same config under its budget. The machine may be shared, and a neighbour's
    load can change between the two: up to three pairs, and a systematic error fails all three."""
    pairs = []
    for attempt in range(3):
        config = _config(tmp_path / str(attempt), budget=6.0)
        plan = _plan_pretrain("pretrain", config, len(corpus.vocab), torch.device("cpu"), 1, None)
        assert plan.limited_by == "budget" and plan.precision == "fp32" and plan.tokens_per_step == 16 * 64
        train = TensorBlockSource(corpus.tokens, 64, 16, prefix_id=corpus.cls)
        result = pretrain(config, train_data=train, meta=_meta(corpus), tokenizer_file=None)
        assert result.stopped == "budget"
        pairs.append((plan.steps, result.step))
        if abs(plan.steps - result.step) <= 0.25 * result.step:
            return
    pytest.fail(f"predicted vs run steps: {pairs}")


def test_too_few_tokens_is_a_warning_that_says_what_to_change(corpus, tmp_path):
    plan = _plan_pretrain("pretrain", _config(tmp_path, budget=2.0), len(corpus.vocab),
                          torch.device("cpu"), 1, None)
    (warning,) = plan.warnings
    assert "per parameter" in warning and "a budget of about" in warning and "smaller model" in warning
    steps = _plan_pretrain("pretrain", _config(tmp_path, steps=10_000_000, budget=None), len(corpus.vocab),
                           torch.device("cpu"), 1, None)
    assert steps.limited_by == "steps" and steps.warnings == []


def test_lmforge_plan_on_a_pipeline_runs_nothing(tmp_path, capsys):
    spec = {
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "sentiment": {"kind": "prepare", "config": {"input": {"paths": ["corpus:reviews"], "label_field": "label"}}},
            "tokenizer": {"kind": "tokenizer", "config": {"kind": "bpe-bert", "vocab_size": 2000}},
            "shards": {"kind": "tokenize", "config": {}},
            "pretrain": {"kind": "pretrain", "config": {
                "data": {"seq_len": 32},
                "model": {"n_layers": 1, "d_model": 32, "n_heads": 2, "d_ff": 64, "max_positions": 32},
                "train": {"steps": 50, "batch_size": 8, "device": "cpu", "threads": 1}}},
            "finetune": {"kind": "finetune", "config": {
                "data": {"path": "@sentiment", "max_length": 32}, "init_from": "@pretrain",
                "train": {"batch_size": 8, "budget": "1m", "device": "cpu", "threads": 1}}},
        },
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["plan", str(path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    stages = {s["name"]: s for s in plan["stages"]}
    assert list(stages) == ["pretrain", "finetune"]
    assert stages["pretrain"]["steps"] == 50 and stages["pretrain"]["limited_by"] == "steps"
    assert stages["pretrain"]["tokens"] == 50 * 8 * 32
    assert stages["finetune"]["tokens_per_step"] == 8 * 32 and stages["finetune"]["step_s"] > 0
    assert plan["machine"]["threads"] >= 1 and plan["training_seconds"] > 0
    assert not (tmp_path / "run").exists()  # measured, not run
    assert main(["plan", str(ROOT / "configs" / "pretrain-tiny.yaml"), "train.budget=1m", "train.threads=1"]) == 0
    text = capsys.readouterr().out
    assert "pretrain (pretrain):" in text and "ms/step" in text and "CPU capability" in text
