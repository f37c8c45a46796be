import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmforge.train import checkpoint as ck
from lmforge.train.optim import build_optimizer
from lmforge.train.config import OptimConfig
from tests.train.helpers import run, tiny_model, train_cfg

ROOT = Path(__file__).resolve().parents[2]


def test_roundtrip_is_exact_and_pickle_free(tmp_path):
    model = tiny_model(100)
    opt = build_optimizer(model, OptimConfig(), 2, torch.device("cpu"))
    ids = torch.randint(5, 100, (2, 16))
    model(ids, masked_positions=ids > 50)["mlm_logits"].sum().backward()
    opt.step()
    path = ck.save_checkpoint(tmp_path, 7, model, opt, {"step": 7, "data": {"position": 3}})
    assert sorted(p.name for p in path.iterdir()) == [
        "COMPLETE",
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
    ]
    expected_rng = torch.get_rng_state()
    torch.manual_seed(999)
    other = tiny_model(100, seed=5)
    other_opt = build_optimizer(other, OptimConfig(), 2, torch.device("cpu"))
    state, _ = ck.load_checkpoint(path, other, other_opt)
    assert state["data"] == {"position": 3} and torch.equal(torch.get_rng_state(), expected_rng)
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict(), other_opt.state_dict()
    for idx in sa["state"]:
        for key, value in sa["state"][idx].items():
            assert torch.equal(value, sb["state"][idx][key])
    assert sa["param_groups"][0]["lr"] == sb["param_groups"][0]["lr"]


def test_half_written_checkpoint_is_ignored_on_resume(corpus, tmp_path):
    run(corpus, tmp_path, train_cfg(steps=4, checkpoint_every=2))
    root = tmp_path / "checkpoints"
    # a kill in the middle of writing step 6: files there, marker missing; and a leftover temp dir
    half = root / "step-00000006"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\x00" * 10)
    (root / ".tmp-step-00000008-123").mkdir()
    assert ck.resolve_resume("auto", root).name == "step-00000004"
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ck.resolve_resume(str(half), root)
    res = run(corpus, tmp_path, train_cfg(steps=6), resume=ck.resolve_resume("auto", root))
    assert sorted(res.losses) == [5, 6]
    assert ck.latest_checkpoint(root).name == "step-00000006" and (half / "COMPLETE").exists()
    assert not list(root.glob(".tmp-*"))


def test_keep_last_k(corpus, tmp_path):
    run(corpus, tmp_path, train_cfg(steps=8, checkpoint_every=1, keep_last=3))
    assert [p.name for p in ck.complete_checkpoints(tmp_path / "checkpoints")] == [
        "step-00000006",
        "step-00000007",
        "step-00000008",
    ]


def _losses(path: Path) -> dict[int, float]:
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "train_loss" in rec:
            out[rec["step"]] = rec["train_loss"]  # a re-run step's newer record wins
    return out


def test_resume_after_killing_the_process_is_bitwise_identical(corpus, tmp_path):
    # as shipped configs run: precision chosen by the probe, peak FLOPs measured (neither may draw
    # from the training RNG); threads pinned, since a fresh "straight" run may measure another count
    over = {"steps": 300, "checkpoint_every": 2, "keep_last": 2, "precision": "auto", "peak_flops": None,
            "threads": 2}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    corpus.save(tmp_path / "corpus")
    cmd = [
        sys.executable,
        "-m",
        "tests.train.tiny_run",
        str(tmp_path / "killed"),
        json.dumps(over),
        str(tmp_path / "corpus"),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        latest = ck.latest_checkpoint(root)
        if latest is not None and int(latest.name.split("-")[1]) >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resume_from = ck.resolve_resume("auto", root)
    done = int(resume_from.name.split("-")[1])
    assert done < 300
    stop = done + 3
    run(corpus, tmp_path / "killed", train_cfg(**over, stop_at_step=stop), resume=resume_from)
    run(corpus, tmp_path / "straight", train_cfg(**over, stop_at_step=stop))
    killed, straight = (
        _losses(tmp_path / "killed" / "metrics.jsonl"),
        _losses(tmp_path / "straight" / "metrics.jsonl"),
    )
    assert sorted(straight) == list(range(1, stop + 1))
    assert {s: killed[s] for s in straight} == straight  # bitwise, before and after the kill
