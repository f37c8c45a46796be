import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.config import ConfigError, load_config_file
from lmforge.train.data import TensorBlockSource
from lmforge.train.pretrain import make_pretrain_config, pretrain

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses(path):
    config = make_pretrain_config(load_config_file(path), source=str(path))
    assert config.train.steps > 0 and config.data.seq_len <= config.model.max_positions


def _meta(corpus):
    return {"tokenizer": {"vocab_size": len(corpus.vocab), "kind": "wordpiece", "hash": "test",
                          "special_tokens": {"pad": corpus.pad, "unk": 1, "cls": corpus.cls, "sep": corpus.sep,
                                             "mask": corpus.mask, "eos": None}}}


def _tiny(tmp_path, **train):
    layers = [load_config_file(ROOT / "configs" / "pretrain-tiny.yaml"),
              {"out": str(tmp_path / "run"), "data": {"seq_len": 16},
               "model": {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_ff": 64, "max_positions": 16},
               "train": {"steps": 6, "budget": None, "batch_size": 8, "log_every": 2, "eval_every": 3,
                         "eval_batches": 2, "checkpoint_every": 3, "precision": "fp32", "progress": False,
                         "peak_flops": 1e12, **train}}]
    return make_pretrain_config(*layers, source="test")


def _sources(corpus):
    train = TensorBlockSource(corpus.tokens[:30_000], 16, 8, prefix_id=corpus.cls)
    val = TensorBlockSource(corpus.tokens[30_000:32_000], 16, 8, shuffle=False, prefix_id=corpus.cls)
    return train, val


def test_pretrain_writes_the_model_directory_and_resumes(corpus, tmp_path):
    tok = tmp_path / "tokenizer.json"
    tok.write_text("{}")
    config = _tiny(tmp_path, stop_at_step=3)
    train, val = _sources(corpus)
    first = pretrain(config, train_data=train, eval_data=val, meta=_meta(corpus), tokenizer_file=tok)
    out = tmp_path / "run"
    for name in ("config.json", "config.yaml", "model.safetensors", "tokenizer.json", "metrics.jsonl"):
        assert (out / name).is_file(), name
    assert list((out / "tb").iterdir()) and (out / "checkpoints" / "step-00000003" / "COMPLETE").is_file()
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["vocab_size"] == len(corpus.vocab) and saved["heads"] == ["mlm"]
    assert first.step == 3
    train, val = _sources(corpus)
    second = pretrain(_tiny(tmp_path), train_data=train, eval_data=val, meta=_meta(corpus))  # resume: auto
    assert sorted(second.losses) == [4, 5, 6]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train_loss" in r] == [2, 4, 6]
    assert [r["step"] for r in records if "val_loss" in r] == [3, 6]


def test_cli_errors_name_the_problem(tmp_path, capsys):
    cfg = str(ROOT / "configs" / "pretrain-tiny.yaml")
    assert main(["pretrain", "--config", cfg, "--shards", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "data.shards" in capsys.readouterr().err
    assert main(["pretrain", "--config", cfg, "train.optim.lr=-1"]) == 2
    assert "train.optim.lr" in capsys.readouterr().err
    assert main(["pretrain", "--config", cfg, "objective.kind=clm"]) == 2
    assert "model.causal" in capsys.readouterr().err


def test_python_dash_m_lmforge(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lmforge", "pretrain", "--shards", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "no meta.json" in proc.stderr


def test_whole_word_needs_the_tokenizer(corpus, tmp_path):
    train, val = _sources(corpus)
    config = _tiny(tmp_path).model_copy(update={"objective": _tiny(tmp_path).objective.model_copy(update={"whole_word": True})})
    with pytest.raises(ConfigError, match="whole_word"):
        pretrain(config, train_data=train, eval_data=val, meta=_meta(corpus))
