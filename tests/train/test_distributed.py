import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import torch

from lmforge.train.checkpoint import latest_checkpoint
from lmforge.train.loop import train_loop
from lmforge.train.objectives import causal_lm_objective
from tests.train.helpers import ListSource, padded_batches, run, tiny_model, train_cfg

ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_equal_one_with_the_same_global_batch(corpus, tmp_path):
    corpus.save(tmp_path / "corpus")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tests.train.ddp_run",
        str(tmp_path / "ddp"),
        str(tmp_path / "corpus"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-12000:]  # with faulthandler's stacks
    ranks = [json.loads((tmp_path / "ddp" / f"result-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["losses"] == ranks[1]["losses"]  # every process logs the global loss

    single = run(
        corpus,
        tmp_path / "one",
        train_cfg(steps=4, batch_size=8, eval_every=4, eval_batches=2),
        causal=True,
        eval_data=True,
        dropout=0.0,
    )
    for step, loss in single.losses.items():
        assert ranks[0]["losses"][str(step)] == pytest.approx(loss, rel=1e-5)
    assert ranks[0]["evals"][0]["val_loss"] == pytest.approx(single.evals[0]["val_loss"], rel=1e-5)
    # ragged padding, so the processes' token counts differ: the loss is still the global per-token mean
    model = tiny_model(len(corpus.vocab), causal=True, dropout=0.0, attn_dropout=0.0)
    data = ListSource(padded_batches(corpus, 32, 8))
    ragged = train_loop(
        model,
        causal_lm_objective,
        data,
        train_cfg(steps=4, batch_size=8, optim={"name": "sgd", "lr": 1.0}),
        device=torch.device("cpu"),
    )
    for step, loss in ragged.losses.items():
        assert ranks[0]["ragged"][str(step)] == pytest.approx(loss, rel=1e-5)
    # only rank 0 wrote: one metrics line per step, checkpoints once
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len([line for line in lines if "train_loss" in line]) == 4
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").glob("step-*")) == [
        "step-00000002",
        "step-00000004",
    ]


def test_a_cuda_device_without_an_index_is_this_processs_gpu(monkeypatch):
    # torch.device needs no GPU to exist, so this holds on any machine
    from lmforge.train.distributed import resolve_device

    monkeypatch.setenv("LOCAL_RANK", "1")  # what torchrun sets for the second process of a node
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 3)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit index is kept
    assert resolve_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda", 1) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == expected
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("cuda") == torch.device("cuda", 0)


def _torchrun(module: str, *args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", module, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-12000:]  # with faulthandler's stacks


def _kill_processes_naming(text: str) -> None:
    """SIGKILL every process whose command line contains ``text`` (a test's own temporary path), and wait."""
    victims = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
                    victims.append(entry)
            except (OSError, ProcessLookupError):
                pass
    def alive(entry: Path) -> bool:
        try:
            return b"zombie" not in (entry / "status").read_bytes().lower()
        except OSError:
            return False  # gone

    deadline = time.time() + 10
    while any(alive(v) for v in victims) and time.time() < deadline:
        time.sleep(0.05)


def test_two_process_resume_after_sigkill_is_bitwise_identical_with_masks_and_dropout(corpus, tmp_path):
    """Every rank continues its own random stream: rank 1 used to reseed on resume, so its masks and
    dropout after a resume differed from an uninterrupted run's. Both processes are SIGKILLed mid-run."""
    corpus.save(tmp_path / "corpus")
    module, data = "tests.train.ddp_resume_run", str(tmp_path / "corpus")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", module,
           str(tmp_path / "killed"), data, "300", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    root = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 150
    while time.time() < deadline and proc.poll() is None:
        latest = latest_checkpoint(root)
        if latest is not None and int(latest.name.split("-")[1]) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    # torchrun and both ranks, mid-step (the ranks run in sessions of their own: found by their arguments)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _kill_processes_naming(str(tmp_path / "killed"))
    done = int(latest_checkpoint(root).name.split("-")[1])
    stop = str(done + 3)
    _torchrun(module, str(tmp_path / "killed"), data, stop, "1")
    _torchrun(module, str(tmp_path / "straight"), data, stop, "0")
    straight = json.loads((tmp_path / "straight" / "losses-rank0.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "losses-rank0.json").read_text())
    assert sorted(resumed, key=int) == [str(s) for s in range(done + 1, done + 4)]
    assert {s: straight[s] for s in resumed} == resumed  # bitwise
