"""train.parallel=fsdp (FSDP2 over 2 gloo processes): the same losses as one process with the same global
batch, an exact resume from its own checkpoint, and checkpoints in the one-process format that one
process loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.train.checkpoint import load_checkpoint
from lmforge.train.optim import build_optimizer

from tests.train.fsdp_run import FSDP_STEPS
from tests.train.helpers import run, tiny_model, train_cfg

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(*args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tests.train.fsdp_run", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-12000:]


def _result(out: Path, rank: int = 0) -> dict:
    return json.loads((out / f"result-rank{rank}.json").read_text())


def test_fsdp_equals_one_process_resumes_exactly_and_writes_one_process_checkpoints(corpus, tmp_path):
    corpus.save(tmp_path / "corpus")
    _torchrun(str(tmp_path / "fsdp"), str(tmp_path / "corpus"))
    step10 = tmp_path / "fsdp" / "checkpoints" / "step-00000010"
    _torchrun(str(tmp_path / "resumed"), str(tmp_path / "corpus"), str(step10))

    fsdp, other_rank = _result(tmp_path / "fsdp"), _result(tmp_path / "fsdp", 1)
    assert fsdp["losses"] == other_rank["losses"] and len(fsdp["losses"]) == 20  # the global loss on each rank
    one_cfg = train_cfg(batch_size=8, **FSDP_STEPS)
    one = run(corpus, tmp_path / "one", one_cfg, causal=True, eval_data=True, dropout=0.0)
    for step, loss in one.losses.items():
        assert fsdp["losses"][str(step)] == pytest.approx(loss, rel=1e-5), step
    assert [e["val_loss"] for e in fsdp["evals"]] == pytest.approx([e["val_loss"] for e in one.evals], rel=1e-5)

    # exact resume: steps 11..20 of the resumed sharded run are those of the straight one, bit for bit
    resumed = _result(tmp_path / "resumed")["losses"]
    assert sorted(resumed, key=int) == [str(s) for s in range(11, 21)]
    assert resumed == {s: fsdp["losses"][s] for s in resumed}

    # the sharded run's checkpoint is a one-process checkpoint: the same tensors under the same names
    for name in ("model.safetensors", "optimizer.safetensors"):
        sharded = load_file(str(step10 / name))
        single = load_file(str(tmp_path / "one" / "checkpoints" / "step-00000010" / name))
        assert sharded.keys() - {"extra.rng.rank1"} == single.keys()
        for key in single.keys() - {"rng.torch"}:
            assert sharded[key].shape == single[key].shape, key
            assert (sharded[key] - single[key]).abs().max() <= 1e-4 + 1e-3 * single[key].abs().max(), key
    # ... and one process loads it, optimizer state included (a shape or numbering mismatch raises)
    model = tiny_model(len(corpus.vocab), causal=True, dropout=0.0, attn_dropout=0.0)
    optimizer = build_optimizer(model, one_cfg.optim, 2, torch.device("cpu"))
    load_checkpoint(step10, model, optimizer)
    assert len(optimizer.state) == len(list(model.parameters()))

    # rank 0 alone wrote: one metrics line per step; checkpoints at 10 and 20
    lines = [json.loads(line) for line in (tmp_path / "fsdp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "train_loss" in r] == list(range(1, 21))
    event = next(r for r in lines if "parallel" in r)
    assert event["parallel"] == "fsdp" and 0.4 < event["param_share"] < 0.6  # rank 0 held about half
    assert sorted(p.name for p in (tmp_path / "fsdp" / "checkpoints").glob("step-*")) == [
        "step-00000010", "step-00000020"]


def test_fsdp_refuses_in_one_line_what_it_cannot_shard(corpus):
    from torch import nn

    from lmforge.config import ConfigError
    from lmforge.train.distributed import DistInfo
    from lmforge.train.fsdp import ShardedTraining

    two = DistInfo(rank=0, world_size=2)
    with pytest.raises(ConfigError, match="precision fp16 is not supported"):
        ShardedTraining(tiny_model(len(corpus.vocab), causal=True), two, "fp16")
    with pytest.raises(ConfigError, match="needs a model with transformer blocks"):
        ShardedTraining(nn.Linear(4, 4), two, "fp32")
