"""Every config and pipeline the project ships loads and validates as the stage it is for: a shipped
file that drifts from its config model fails here, not in a user's first command."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.config import load_config_file
from lmforge.finetune.config import FinetuneConfig
from lmforge.finetune.stage import make_finetune_config
from lmforge.pipeline import load_pipeline, plan_pipeline
from lmforge.pipeline.quickstart import shipped_config
from lmforge.train.config import PretrainConfig
from lmforge.train.pretrain import make_pretrain_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_every_shipped_config_is_tested_here():
    assert {p.name for p in CONFIGS} == {"finetune-reviews-full.yaml", "finetune-reviews-lora.yaml",
                                         "finetune-seg.yaml", "pretrain-gpt-tiny.yaml", "pretrain-tiny.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_validates(path: Path):
    raw = load_config_file(str(path))
    if path.name.startswith("pretrain-"):
        config = make_pretrain_config(raw, source=str(path))
        assert isinstance(config, PretrainConfig) and config.out == raw["out"]
        assert config.model.model_dump(include=set(raw["model"])) == raw["model"]  # every key taken as written
    else:
        # as its header's command runs it: `lmforge finetune --config FILE --init-from runs/pretrain`
        config = make_finetune_config(raw, {"init_from": "runs/pretrain"}, source=str(path))
        assert isinstance(config, FinetuneConfig) and config.method == raw["method"]
        assert config.task == raw.get("task", "classification")


def test_shipped_quickstart_pipeline_plans(tmp_path):
    path = shipped_config("quickstart.yaml")
    plan = plan_pipeline(load_pipeline(str(path), [f"run_dir={tmp_path / 'run'}"]), str(path))
    kinds = [stage.kind.name for stage in plan]
    assert {"prepare", "tokenizer", "tokenize", "pretrain", "finetune"} <= set(kinds)
