"""bench/gpu_check.py's CPU-side logic: device detection, the plan, the peak table, time boxes and
exception capture, the JSON writer, pytest's counts, and the training measurement (on a tiny CPU model)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import gpu_check
from bench.gpu_check import Context, Section

ROOT = Path(__file__).resolve().parent.parent


def test_without_a_gpu_it_says_so_writes_skipped_and_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)  # holds on GPU machines too
    start = time.monotonic()
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    assert time.monotonic() - start < 15  # seconds, not a run of the plan
    assert "no CUDA GPU" in capsys.readouterr().out
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert doc["status"] == "skipped" and "is_available() is False" in doc["reason"]
    assert (
        doc["sections"] == {}
        and doc["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    )
    assert [s["name"] for s in doc["plan"]] == [s.name for s in gpu_check.plan()]
    assert "no CUDA GPU" in (tmp_path / "gpu_check.log").read_text()


def test_dry_run_prints_the_plan_as_a_script():
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--dry-run", "--only", "tests", "fp16"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tests" in proc.stdout and "fp16" in proc.stdout and "quickstart" not in proc.stdout
    assert "time boxes in all: 52 s" in proc.stdout


def test_the_plan_fits_five_minutes_with_the_shapes_asked_for(tmp_path):
    from lmforge.pipeline.plan import plan_pipeline
    from lmforge.pipeline.quickstart import quickstart_pipeline

    sections = {s.name: s for s in gpu_check.plan()}
    assert list(sections) == [
        "environment",
        "tests",
        "pretrain_gpt2",
        "pretrain_bert",
        "compile",
        "fp16",
        "quickstart",
        "serve",
    ]
    assert sum(s.box_s for s in sections.values()) <= gpu_check.DEFAULT_BUDGET_S < 300
    assert sections["tests"].box_s <= 90
    shape = ("n_layers", "d_model", "n_heads", "vocab_size")
    gpt2, bert = sections["pretrain_gpt2"].config, sections["pretrain_bert"].config
    assert [gpt2["model"][k] for k in shape] == [12, 768, 12, 50257] and gpt2["seq_len"] == 1024
    assert gpt2["model"]["causal"] and gpt2["precision"] == "bf16"
    assert [bert["model"][k] for k in shape] == [12, 768, 12, 30522] and bert["seq_len"] in (128, 512)
    assert bert["objective"] == "mlm" and not bert["model"]["causal"]
    for name in ("pretrain_gpt2", "pretrain_bert", "compile", "fp16"):
        cfg = sections[name].config
        assert cfg["steps"] >= cfg["warmup"] + 2, name  # rate() needs steady steps after the warmup
        assert cfg["seq_len"] <= cfg["model"]["max_positions"], name
    assert sections["fp16"].config["precision"] == "fp16"
    # the quickstart's training budgets at the planned --minutes leave room for its other stages
    qs = sections["quickstart"].config
    stages = plan_pipeline(
        quickstart_pipeline(qs["minutes"], str(tmp_path / "qs"), qs["device"]), "quickstart"
    )
    budgets = [s.config.train.budget for s in stages if hasattr(s.config, "train") and s.config.train.budget]
    assert len(budgets) == 2 and sum(budgets) < sections["quickstart"].box_s / 2
    assert all(s.config.train.device == "cuda" for s in stages if hasattr(s.config, "train"))


@pytest.mark.parametrize(
    "name, dtype, entry, tflops",
    [
        ("NVIDIA H200", "bf16", "H200", 989.0),
        ("NVIDIA H100 80GB HBM3", "bf16", "H100", 989.0),
        ("NVIDIA H100 PCIe", "fp16", "H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", "bf16", "A100", 312.0),
        ("NVIDIA L4", "bf16", "L4", 121.0),
        ("NVIDIA L40S", "bf16", "L40S", 362.0),  # not L4's figure: whole words are matched
        ("Tesla V100-SXM2-16GB", "fp32", "V100", 15.7),
    ],
)
def test_datasheet_peaks(name, dtype, entry, tflops):
    assert gpu_check.datasheet_peak(name, dtype) == (entry, tflops * 1e12)


def test_unknown_gpus_and_dtypes_fall_back_to_a_measured_matmul():
    assert gpu_check.datasheet_peak("NVIDIA A10G", "bf16") is None  # A10G is not the A10 of the table
    assert gpu_check.datasheet_peak("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 tensor cores
    calls: list[int] = []

    def measure() -> float:
        calls.append(1)
        return 123e12

    assert gpu_check.mfu_peak("NVIDIA H200", "bf16", measure) == {
        "flops": 989e12,
        "source": "datasheet: H200 bf16 dense",
    }
    assert calls == []  # the table needs no measurement
    found = gpu_check.mfu_peak("NVIDIA A10G", "bf16", measure)
    assert found["flops"] == 123e12 and found["source"].startswith("measured") and calls == [1]


def _fails(config: dict[str, Any], ctx: Context, result: dict[str, Any]) -> None:
    result["measured_before_failing"] = 1.5
    raise ValueError("bad shape (3, 4)\nsecond line")


def _sleeps(config: dict[str, Any], ctx: Context, result: dict[str, Any]) -> None:
    result["started"] = True
    time.sleep(config["seconds"])


def _works(config: dict[str, Any], ctx: Context, result: dict[str, Any]) -> None:
    result["value"] = config["value"]


RUNNERS = {"fails": _fails, "sleeps": _sleeps, "works": _works}


def test_a_failing_or_overrunning_section_is_recorded_and_the_next_runs(tmp_path):
    sections = [
        Section("fails", "raises", 5),
        Section("sleeps", "overruns", 0.5, {"seconds": 60}),
        Section("works", "ok", 5, {"value": 7}),
    ]
    seen: list[str] = []
    start = time.monotonic()
    records = gpu_check.run_plan(
        sections, RUNNERS, Context(out=tmp_path), time.monotonic() + 60, lambda r: seen.append(r["name"])
    )
    assert time.monotonic() - start < 30  # the sleeper was stopped at its box, not after 60 s
    failed, overran, ok = records
    assert seen == ["fails", "sleeps", "works"]  # each record is handed over as soon as it exists
    assert failed["status"] == "failed" and failed["result"] == {"measured_before_failing": 1.5}
    assert failed["error"]["type"] == "ValueError" and failed["error"]["message"] == "bad shape (3, 4)"
    assert (
        failed["error"]["where"].startswith("tests/test_gpu_check.py:")
        and "in _fails" in failed["error"]["where"]
    )
    assert failed["error"]["in_repo"] == failed["error"]["where"]
    assert overran["status"] == "timeout" and overran["result"] == {"started": True}
    assert overran["error"]["type"] == "SectionTimeout" and "in _sleeps" in overran["error"]["where"]
    assert ok["status"] == "ok" and ok["result"] == {"value": 7}


def test_sections_are_skipped_when_the_budget_is_spent(tmp_path):
    sections = [Section("works", "ok", 10, {"value": 1}), Section("works", "ok again", 10, {"value": 2})]
    records = gpu_check.run_plan(
        sections, RUNNERS, Context(out=tmp_path), time.monotonic() + 4, lambda r: None
    )
    # 4 s left of a 10 s box: less than half, so skipped rather than cut short
    assert [r["status"] for r in records] == ["skipped", "skipped"] and "4 s of the budget left" in records[
        0
    ]["reason"]


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a killed orphan may wait for a reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_the_time_box_kills_a_subprocess_and_its_children(tmp_path):
    pid_file = tmp_path / "pids"
    code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "print('up', flush=True)\ntime.sleep(60)\n"
    )

    def runs_child(config: dict[str, Any], ctx: Context, result: dict[str, Any]) -> None:
        result["returncode"] = gpu_check.stream([sys.executable, "-c", code], ctx, "child")

    log = tmp_path / "log"
    with open(log, "w") as f:
        record = gpu_check.run_section(
            Section("child", "sleeps in a subprocess", 3), runs_child, Context(out=tmp_path, log=f), 3
        )
    assert record["status"] == "timeout" and record["seconds"] < 30  # the child sleeps 60 s
    pids = [int(p) for p in pid_file.read_text().split()]
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pids) == 2 and not any(_alive(p) for p in pids)
    assert "child| up" in log.read_text()  # its output reached the log as it came


def test_results_are_strict_json_written_atomically(tmp_path):
    path = tmp_path / "deep" / "gpu_check.json"
    gpu_check.write_results(
        path,
        {
            "loss": float("nan"),
            "scale": float("inf"),
            "where": tmp_path,
            "dtype": torch.bfloat16,
            "steps": [1, 2.5],
            "ok": True,
            "none": None,
        },
    )

    def refuse(name: str) -> float:
        raise AssertionError(f"non-standard JSON constant {name}")

    doc = json.loads(path.read_text(), parse_constant=refuse)
    assert doc == {
        "loss": "nan",
        "scale": "inf",
        "where": str(tmp_path),
        "dtype": "torch.bfloat16",
        "steps": [1, 2.5],
        "ok": True,
        "none": None,
    }
    gpu_check.write_results(path, {"status": "done"})
    assert json.loads(path.read_text()) == {"status": "done"}
    assert [p.name for p in path.parent.iterdir()] == ["gpu_check.json"]  # no temporary file left


def test_pytest_counts_from_junit(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_mixed.py").write_text(
        "import pytest\n\ndef test_ok():\n    pass\n\ndef test_bad():\n    assert 1 == 2\n\n"
        "@pytest.mark.skip(reason='no')\ndef test_skipped():\n    pass\n"
    )
    xml = tmp_path / "out.xml"
    with open(tmp_path / "log", "w") as f:
        code = gpu_check.stream(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--rootdir={suite}",
                f"--junitxml={xml}",
                str(suite),
            ],
            Context(out=tmp_path, log=f),
            "pytest",
        )
    assert code == 1
    counts = gpu_check.junit_counts(xml)
    assert counts == {
        "passed": 1,
        "failed": 1,
        "errors": 0,
        "skipped": 1,
        "failing": ["test_mixed::test_bad"],
    }


TINY = {
    "vocab_size": 200,
    "max_positions": 32,
    "n_layers": 1,
    "d_model": 32,
    "n_heads": 2,
    "d_ff": 64,
    "causal": True,
    "norm": "pre",
    "type_vocab_size": 0,
}


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_training_measurement_on_a_tiny_cpu_model(tmp_path, objective):
    model = TINY if objective == "clm" else {**TINY, "causal": False, "norm": "post", "type_vocab_size": 2}
    config = {
        "model": model,
        "objective": objective,
        "seq_len": 32,
        "batch_size": 4,
        "steps": 6,
        "warmup": 2,
        "precision": "bf16",
    }
    result: dict[str, Any] = {}
    gpu_check.train_throughput(config, Context(out=tmp_path), result, device=torch.device("cpu"))
    assert result["steps"] == 6 and result["losses_finite"] and result["bad_steps"] == 0
    assert result["tokens_per_step"] == 128 and result["tokens_per_s"] > 0
    assert result["peak"]["source"].startswith("measured")  # a CPU is not in the datasheet table
    assert result["mfu"] == pytest.approx(
        result["flops_per_token"] * result["tokens_per_s"] / result["peak"]["flops"], rel=1e-2, abs=1e-4
    )
    assert result["fused_adamw"] is True and result["parameters_on"] == "cpu"
    assert math.isclose(result["first_loss"], math.log(200), rel_tol=0.1)  # random init: about ln(vocab)


def test_the_scaler_state_is_required_from_the_checkpoint(tmp_path):
    config = {
        "model": TINY,
        "objective": "clm",
        "seq_len": 32,
        "batch_size": 4,
        "steps": 4,
        "warmup": 1,
        "precision": "fp32",
    }
    gpu_check.train_throughput(
        config, Context(out=tmp_path), {}, out_dir=tmp_path / "run", device=torch.device("cpu")
    )
    with pytest.raises(RuntimeError, match="holds no GradScaler state"):  # fp32: the loop had no scaler
        gpu_check.scaler_state(tmp_path / "run")
    with pytest.raises(RuntimeError, match="no checkpoint"):
        gpu_check.scaler_state(tmp_path / "elsewhere")


def test_quickstart_accuracy_from_a_finetune_report(tmp_path):
    from lmforge.eval.rows import prediction_row
    from lmforge.eval.report import write_report

    gold = ["pos", "neg", "pos", "neg"]
    rows = [
        prediction_row("lmforge full", gold, ["pos", "neg", "pos", "pos"]),
        prediction_row("tfidf", gold, ["pos", "pos", "pos", "pos"], kind="baseline"),
    ]
    write_report(rows, tmp_path / "finetune" / "report", data="d", split="test")
    assert gpu_check.quickstart_accuracy(tmp_path) == {
        "test_accuracy": 0.75,
        "model_row": "lmforge full",
        "baselines": {"tfidf": 0.5},
    }
