"""Fine-tuning's own training defaults survive any train.* override, from the CLI, a pipeline or Python."""

from __future__ import annotations

from lmforge.config import parse_overrides
from lmforge.finetune.config import FinetuneConfig
from lmforge.finetune.stage import make_finetune_config
from lmforge.pipeline.config import stage_overrides
from lmforge.train.config import TrainConfig

_BASE = {"init_from": "some/model", "data": {"path": "some/data"}}


def _train(*layers: dict) -> dict:
    return make_finetune_config(_BASE, *layers, source="t").train.model_dump()


def test_train_override_changes_only_what_it_names():
    plain = _train()
    changed = _train(parse_overrides(["train.batch_size=8"]))
    assert plain["batch_size"] == 16 and changed["batch_size"] == 8
    assert {k for k in plain if plain[k] != changed[k]} == {"batch_size"}
    assert plain["optim"]["lr"] == 5e-5 and plain["schedule"]["warmup"] == 0.1
    assert plain["early_stopping"] == {"metric": "val_acc", "mode": "max", "patience": 2, "min_delta": 0.0}


def test_nested_train_override_keeps_its_siblings():
    changed = _train(parse_overrides(["train.optim.name=sgd", "train.early_stopping.patience=5"]))
    assert changed["optim"]["name"] == "sgd" and changed["optim"]["lr"] == 5e-5
    assert changed["early_stopping"] == {"metric": "val_acc", "mode": "max", "patience": 5, "min_delta": 0.0}


def test_cli_style_option_layer_keeps_defaults():
    # what `--no-progress` adds: {"train": {"progress": False}}
    train = _train({"train": {"progress": False}}, parse_overrides(["train.device=cpu"]))
    assert train["optim"]["lr"] == 5e-5 and train["early_stopping"]["metric"] == "val_acc"
    assert train["progress"] is False and train["device"] == "cpu"


def test_pipeline_stage_override_keeps_defaults():
    layer = stage_overrides(["finetune.train.batch_size=8"], ["finetune"])
    train = _train(layer["stages"]["finetune"]["config"])
    assert train["batch_size"] == 8 and train["optim"]["lr"] == 5e-5 and train["schedule"]["warmup"] == 0.1


def test_python_train_config_instance_keeps_defaults():
    config = FinetuneConfig(**_BASE, train=TrainConfig(batch_size=8))
    assert config.train.batch_size == 8 and config.train.optim.lr == 5e-5
    assert config.train.early_stopping.patience == 2
    assert FinetuneConfig(**_BASE, train={"seed": 3}).train.schedule.warmup == 0.1
