"""Trackers: metrics.jsonl always, TensorBoard by default, Weights & Biases on request (offline by default)."""

from __future__ import annotations

import json
import sys

import pytest

from lmforge.config import ConfigError, build_config
from lmforge.train.config import TrainConfig
from tests.train.helpers import run, train_cfg


def test_trackers_default_and_the_tensorboard_switch():
    assert build_config(TrainConfig, {}).trackers == ["jsonl", "tensorboard"]  # today's behaviour
    assert build_config(TrainConfig, {"tensorboard": False}).trackers == ["jsonl"]
    both = build_config(TrainConfig, {"trackers": ["jsonl", "wandb"], "tensorboard": True})
    assert both.trackers == ["jsonl", "wandb", "tensorboard"]
    again = build_config(TrainConfig, both.model_dump(mode="json"))  # the resolved config reads back the same
    assert again.trackers == both.trackers
    with pytest.raises(ConfigError, match="'trackers'.*must include jsonl"):
        build_config(TrainConfig, {"trackers": ["wandb"]}, source="train")
    with pytest.raises(ConfigError, match="trackers.0"):
        build_config(TrainConfig, {"trackers": ["mlflow"]})


def test_wandb_offline_writes_its_run_under_the_output_dir(corpus, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the `wandb` extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run(corpus, tmp_path, train_cfg(steps=4, log_every=2, trackers=["jsonl", "wandb"]))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (history,) = runs[0].glob("run-*.wandb")
    data = history.read_bytes()  # complete when training returns: the tracker waits for wandb's writer
    assert b"train/loss" in data and b"grad_norm" in data  # the logged metrics are in the run file
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 2, 4]  # step 0: the precision and threads the run chose
    assert not (tmp_path / "tb").exists()


def test_wandb_without_the_package_is_one_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: find_spec finds nothing
    with pytest.raises(ConfigError, match=r"'trackers'.*wandb needs the wandb package: pip install 'lmforge\[wandb\]'"):
        train_cfg(steps=2, trackers=["jsonl", "wandb"])
