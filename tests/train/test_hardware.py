"""Precision and threads chosen by measurement; honest meters (MFU, the budget's progress bar)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from lmforge.config import ConfigError
from lmforge.train import hardware
from lmforge.train.hardware import choose_precision, choose_threads, measure_peak_flops, resolve_precision
from lmforge.train.loop import train_loop
from lmforge.train.objectives import causal_lm_objective
from lmforge.train.track import MFUMeter, Tracker
from tests.train.helpers import ListSource, padded_batches, tiny_model, train_cfg


class Probe:
    """A fake measurement: GFLOP/s per precision, counting the calls."""

    def __init__(self, **rates: float) -> None:
        self.rates, self.calls = rates, 0

    def __call__(self, candidates):
        self.calls += 1
        return {c: self.rates[c] for c in candidates}


def test_avx2_cpu_gets_fp32_without_probing():
    probe = Probe(fp32=9.0, bf16=0.4)
    choice = choose_precision("auto", "cpu", native_bf16=False, measure=probe)
    assert choice.precision == "fp32" and "no native bf16" in choice.reason and probe.calls == 0


def test_avx512_bf16_cpu_gets_bf16_only_when_measured_faster():
    fast = choose_precision("auto", "cpu", native_bf16=True, measure=Probe(fp32=180.0, bf16=800.0))
    assert fast.precision == "bf16" and fast.gflops == {"fp32": 180.0, "bf16": 800.0}
    assert "4.4x" in fast.reason
    level = choose_precision("auto", "cpu", native_bf16=True, measure=Probe(fp32=180.0, bf16=190.0))
    assert level.precision == "fp32" and "only 1.06x" in level.reason


def test_cuda_with_and_without_bf16():
    assert choose_precision("auto", "cuda", True, Probe(fp32=60e3, bf16=700e3)).precision == "bf16"
    old = choose_precision("auto", "cuda", False, Probe(fp32=15e3, bf16=1.0))
    assert old.precision == "fp16" and "loss scaling" in old.reason


def test_explicit_bf16_on_emulating_cpu_runs_with_the_measured_slowdown():
    choice = choose_precision("bf16", "cpu", native_bf16=False, measure=Probe(fp32=8.7, bf16=0.4))
    assert choice.precision == "bf16"
    assert choice.warning is not None and "21.7x slower than fp32" in choice.warning
    assert choose_precision("bf16", "cpu", True, Probe(fp32=1.0, bf16=2.0)).warning is None


def test_fp16_on_cpu_is_a_one_line_error_that_does_not_advise_bf16():
    for native in (False, True):
        with pytest.raises(ConfigError) as err:
            choose_precision("fp16", "cpu", native, Probe(fp32=1.0, bf16=1.0))
        text = str(err.value)
        assert "\n" not in text and "precision: auto" in text and "use bf16" not in text
    with pytest.raises(ConfigError, match="fp16"):  # the stage refuses before reading any data
        from lmforge.train.config import PretrainConfig
        from lmforge.train.pretrain import pretrain

        pretrain(PretrainConfig(train={"precision": "fp16", "device": "cpu"}, data={"shards": "/nonexistent"}))


def test_probe_is_cached_per_device_and_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(hardware, "matmul_rate", lambda device, p, *a, **k: calls.append(p) or 1e9)
    cpu = torch.device("cpu")
    first = hardware.probe_precisions(cpu, ("fp32", "bf16"))
    assert first == {"fp32": 1.0, "bf16": 1.0} and calls == ["fp32", "bf16"] * 3  # interleaved rounds
    calls.clear()
    assert hardware.probe_precisions(cpu, ("fp32", "bf16")) == first and calls == []  # from the cache
    cached = json.loads(hardware.cache_path().read_text())
    key = hardware.device_key(cpu)
    assert list(cached) == [key] and torch.__version__ in key and torch.backends.cpu.get_cpu_capability() in key
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # a capped ISA is another entry
    hardware.probe_precisions(cpu, ("fp32",))
    assert len(calls) == 3
    hardware.cache_path().write_text("{not json")  # a damaged cache is measured again, not an error
    assert hardware.probe_precisions(cpu, ("fp32",)) == {"fp32": 1.0} and len(calls) == 6


def test_probes_never_touch_the_training_rng():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    resolve_precision("auto", torch.device("cpu"), use_cache=False)
    measure_peak_flops(torch.device("cpu"), "fp32")
    choose_threads(seconds=0.01)
    assert torch.equal(torch.get_rng_state(), state)


def test_cpu_bf16_check_follows_the_isa_limits():
    """ATEN_CPU_CAPABILITY=avx2 + ONEDNN_MAX_CPU_ISA=AVX2 (the older-CPU check) must read as emulated."""
    code = "from lmforge.train.hardware import cpu_has_native_bf16 as f; print(f())"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_mfu_never_exceeds_one():
    meter = MFUMeter(flops_per_token=1e6, peak=1e9)
    assert meter(500.0) == pytest.approx(0.5)
    assert meter(5000.0) == 1.0 and meter.raised  # faster than the probe: the peak is what was seen
    assert meter(2500.0) == pytest.approx(0.5)
    assert all(0 < meter(r) <= 1.0 for r in (1.0, 1e3, 1e5, 1e7))
    assert MFUMeter(None, 1e9)(100.0) is None


def test_progress_follows_the_budget_not_the_step_cap():
    bar = Tracker(None, False, total_steps=100_000, budget=600.0, label="pretrain")
    assert bar.completed(step=50, elapsed=300.0) == pytest.approx(500.0)  # half the budget: 50%
    assert bar.completed(step=90_000, elapsed=60.0) == pytest.approx(900.0)  # the step cap comes first
    assert bar.completed(step=1, elapsed=900.0) == 1000.0
    steps = Tracker(None, False, total_steps=40)
    assert steps.total == 40 and steps.completed(step=10, elapsed=5.0) == 10


def test_loop_logs_its_choice_restores_threads_and_resumes_with_them(corpus, tmp_path):
    before = torch.get_num_threads()
    model = tiny_model(len(corpus.vocab), causal=True)
    data = ListSource(padded_batches(corpus, 16, 8))
    cfg = train_cfg(steps=2, precision="auto", threads=1, checkpoint_every=2)
    train_loop(model, causal_lm_objective, data, cfg, device=torch.device("cpu"), out_dir=tmp_path)
    assert torch.get_num_threads() == before  # the run's count, not the process's
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert first["event"] == "precision" and first["precision"] in ("fp32", "bf16") and first["threads"] == 1
    state = json.loads((tmp_path / "checkpoints" / "step-00000002" / "state.json").read_text())["state"]
    assert state["threads"] == 1 and state["precision"] == first["precision"]


def test_measuring_the_mfu_peak_changes_no_loss(corpus, tmp_path):
    from tests.train.helpers import run

    measured = run(corpus, tmp_path / "measured", train_cfg(steps=4, peak_flops=None))  # out dir: it measures
    given = run(corpus, tmp_path / "given", train_cfg(steps=4, peak_flops=1e12))
    assert measured.losses == given.losses  # bitwise: the probe draws no random numbers

