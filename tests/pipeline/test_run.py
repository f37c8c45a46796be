"""`lmforge run`: a tiny real pipeline end to end, skipping, re-running what changed, --force,
validation before anything runs, and the run report."""

import json
from pathlib import Path

import pytest
import yaml

from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.corpora import get_corpus
from lmforge.pipeline import load_pipeline, plan_pipeline, run_pipeline
from lmforge.pipeline.plan import RECORD
from lmforge.pipeline.quickstart import quickstart_pipeline, shipped_config

ROOT = Path(__file__).resolve().parents[2]


def _reviews(path: Path, n: int = 600) -> Path:
    """A real subset: n reviews spread over the whole corpus (both labels), with their labels."""
    records = list(get_corpus("reviews").records())
    with open(path, "w", encoding="utf-8") as f:
        for r in records[:: len(records) // n]:
            f.write(json.dumps({"text": r.text, "label": r.label}, ensure_ascii=False) + "\n")
    return path


def _pipeline(tmp_path: Path) -> Path:
    data = _reviews(tmp_path / "reviews.jsonl")
    spec = {
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "sentiment": {"kind": "prepare", "config": {"input": {"paths": [str(data)], "label_field": "label"}, "progress": False}},
            "tokenizer": {"kind": "tokenizer", "config": {"kind": "wordpiece", "vocab_size": 300, "progress": False}},
            "shards": {"kind": "tokenize", "config": {"progress": False}},
            "pretrain": {
                "kind": "pretrain",
                "config": {
                    "data": {"seq_len": 16},
                    "model": {"n_layers": 1, "d_model": 32, "n_heads": 2, "d_ff": 64, "max_positions": 16},
                    "embedding_init": {"kind": "ppmi-svd"},  # counts "@shards", filled in by the pipeline
                    "train": {
                        "steps": 4, "batch_size": 4, "log_every": 1, "eval_every": 2, "eval_batches": 1,
                        "progress": False, "tensorboard": False, "device": "cpu",
                    },
                },
            },
            "baselines": {"kind": "evaluate", "config": {"baselines": {"enabled": True}, "progress": False}},
            "export": {"kind": "export", "config": {"to": "int8"}},
            "later": {"kind": "distill", "enabled": False, "config": {"init_from": "@pretrain"}},
        },
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _run(path: Path, *overrides: str, force=()):
    return {r.name: r.status for r in run_pipeline(load_pipeline(path, overrides), source=str(path), force=force, stdout_summary=False)}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    path = _pipeline(tmp)
    first = _run(path)
    return path, tmp / "run", first


def test_tiny_pipeline_runs_end_to_end(finished):
    _, run, first = finished
    assert first == dict.fromkeys(["sentiment", "tokenizer", "shards", "pretrain", "baselines", "export"], "ran")
    assert json.loads((run / "export" / "config.json").read_text())  # an int8 model directory of the pretrain
    assert (run / "sentiment" / "DONE").is_file() and (run / "shards" / "DONE").is_file()
    assert (run / "pretrain" / "model.safetensors").is_file()
    tok = json.loads((run / "tokenizer" / "meta.json").read_text())
    shards = json.loads((run / "shards" / "meta.json").read_text())
    assert shards["tokenizer"]["hash"] == tok["hash"]  # inputs were wired: shards made with this run's tokenizer
    assert json.loads((run / "pretrain" / "config.json").read_text())["model"]["vocab_size"] == tok["vocab_size"]
    report = json.loads((run / "baselines" / "report.json").read_text())
    assert report["data"] == str(run / "sentiment")
    record = json.loads((run / "pretrain" / RECORD).read_text())
    assert record["status"] == "done" and record["fingerprint"] and record["run_id"]


def test_run_report_has_funnel_curves_and_tables(finished):
    _, run, _ = finished
    md = (run / "report.md").read_text(encoding="utf-8")
    for needle in ("Data funnel", "exact_duplicate", "Tokenizer", "Pretraining", "tfidf", "resolved config"):
        assert needle in md, needle
    html = (run / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= 2  # the loss curves and the confusion matrices, inlined
    assert "src='curves" not in html and "src=\"" not in html  # nothing loaded from disk
    assert (run / "report_files" / "curves_pretrain.png").is_file()


def test_evaluate_plots_the_curves_of_a_real_pretraining_run(finished, tmp_path):
    """`lmforge evaluate --curves runs/pt/metrics.jsonl` reads the loop's own format (it plotted nothing)."""
    _, run, _ = finished
    out = tmp_path / "eval"
    code = main(["evaluate", "--baselines", "--data", str(run / "sentiment"), "--out", str(out), "--no-progress",
                 "--curves", str(run / "pretrain" / "metrics.jsonl")])
    assert code == 0
    curves = json.loads((out / "report.json").read_text(encoding="utf-8"))["curves"]
    assert curves["train"]["steps"] == [1, 2, 3, 4] and curves["validation"]["steps"] == [2, 4]
    assert (out / "curves.png").is_file()


def test_second_run_skips_everything_and_changes_rerun_downstream(finished):
    path, run, _ = finished
    assert set(_run(path).values()) == {"skipped"}
    # a tokenizer change re-runs it and every stage that reads it, directly or not; data prep is kept
    statuses = _run(path, "tokenizer.vocab_size=280")
    assert statuses == {"sentiment": "skipped", "tokenizer": "ran", "shards": "ran", "pretrain": "ran", "baselines": "skipped", "export": "ran"}
    assert yaml.safe_load((run / "tokenizer" / "config.yaml").read_text())["vocab_size"] == 280
    # --force redoes one stage and what reads it
    statuses = _run(path, "tokenizer.vocab_size=280", force=["shards"])
    assert statuses == {"sentiment": "skipped", "tokenizer": "skipped", "shards": "ran", "pretrain": "ran", "baselines": "skipped", "export": "ran"}


def test_interrupted_stage_is_resumed_not_restarted(finished):
    path, run, _ = finished
    _run(path)  # settle on the file's config
    record = json.loads((run / "pretrain" / RECORD).read_text())
    record["status"] = "running"  # as left by a kill during pretraining
    (run / "pretrain" / RECORD).write_text(json.dumps(record))
    (run / "pretrain" / "model.safetensors").unlink()
    checkpoints = sorted((run / "pretrain" / "checkpoints").iterdir())
    assert checkpoints  # kept for the resume
    statuses = _run(path)
    assert statuses["pretrain"] == "ran" and statuses["sentiment"] == "skipped"
    assert (run / "pretrain" / "model.safetensors").is_file()
    assert statuses["baselines"] == "skipped" and statuses["export"] == "ran"  # it reads the new weights


@pytest.mark.parametrize(
    "override, message",
    [
        ("pretrain.train.batchsize=3", "stages.pretrain: unknown key 'train.batchsize'"),
        ("tokenizer.vocab_size=5", "stages.tokenizer: bad value for 'vocab_size'"),
        ("shards.data=@baselines", "stages.shards.data: '@baselines': stage 'baselines' runs later"),
        ("shards.tokenizer=@sentiment", "stages.shards.tokenizer: stage 'sentiment' is a prepare stage"),
        ("pretrain.data.shards=/nonexistent/shards", "stages.pretrain.data.shards: /nonexistent/shards does not exist"),
        ("tokenizer.kind=bpe", "stages.pretrain: objective.kind=mlm needs a mask token"),
        ("export.to=hf pretrain.model.norm=pre", "stages.export: to: hf exports encoders as BERT, which is post-LN"),
        ("export.model=@shards", "stages.export.model: stage 'shards' is a tokenize stage"),
        ("later.enabled=true", "stages.later.kind: stage kind 'distill' is not available"),
        ("nosuch.key=1", "'nosuch' is neither a stage"),
        ("stages.sentiment.kind=bpe", "stages.sentiment: unknown key 'kind'"),  # overrides address the config
    ],
)
def test_bad_pipeline_fails_before_anything_runs(tmp_path, override, message):
    path = _pipeline(tmp_path)
    with pytest.raises(ConfigError) as err:
        _run(path, *override.split())
    assert message in str(err.value)
    assert not (tmp_path / "run" / "sentiment").exists()


def test_cli_run_reports_config_errors_in_one_line(tmp_path, capsys):
    path = _pipeline(tmp_path)
    assert main(["run", str(path), "pretrain.model.d_modl=8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stages.pretrain: unknown key 'model.d_modl'" in err
    assert main(["run", str(path), "--force", "nosuch"]) == 2
    assert "--force nosuch" in capsys.readouterr().err


def test_quickstart_is_shipped_and_valid(tmp_path):
    assert shipped_config("quickstart.yaml").is_file()
    pipeline = quickstart_pipeline(minutes=20, out=str(tmp_path / "qs"), device="cpu")
    stages = {s.name: s for s in plan_pipeline(pipeline, "quickstart")}
    assert list(stages) == ["sentiment", "text", "tokenizer", "shards", "pretrain", "baselines", "finetune", "export"]
    assert stages["export"].refs == {"model": "finetune"}
    assert stages["finetune"].refs == {"data.path": "sentiment", "init_from": "pretrain"}
    assert stages["pretrain"].config.train.budget == pytest.approx(840.0)  # 7m x 20/10
    assert stages["finetune"].config.train.budget == pytest.approx(300.0)  # 2.5m x 20/10
    assert stages["pretrain"].config.train.device == "cpu"
    assert stages["shards"].refs == {"data": "text", "tokenizer": "tokenizer"}
    assert stages["baselines"].config.data == str(tmp_path / "qs" / "sentiment")


def _shipped_pipelines() -> list[Path]:
    """Pipeline files (those with stages) among the shipped configs; stage configs have their own tests."""
    files = [*(ROOT / "configs").glob("*.yaml"), *(ROOT / "lmforge" / "configs").glob("*.yaml")]
    return sorted(p for p in files if "stages" in (yaml.safe_load(p.read_text(encoding="utf-8")) or {}))


def test_shipped_pipelines_found():
    assert ROOT / "lmforge" / "configs" / "quickstart.yaml" in _shipped_pipelines()


@pytest.mark.parametrize("path", _shipped_pipelines(), ids=lambda p: p.name)
def test_every_shipped_pipeline_parses(path, tmp_path):
    plan_pipeline(load_pipeline(path, run_dir=str(tmp_path / "run")), str(path))


def test_report_renders_in_a_headless_browser(finished, tmp_path):
    """The self-contained report.html shows tables and plots in Chromium (a screenshot with ink on it)."""
    import shutil
    import subprocess

    import matplotlib.image

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    _, run, _ = finished
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1000,1600",
         (run / "report.html").resolve().as_uri()],
        check=True, capture_output=True, timeout=60,
    )
    pixels = matplotlib.image.imread(shot)[..., :3]  # (H, W, 3) floats in [0, 1]
    ink = (pixels.mean(axis=2) < 0.5).mean()  # share of dark pixels: text, table rules, plots
    assert 0.005 < ink < 0.5


def test_stage_config_from_a_file_and_wiring_by_kind(tmp_path):
    """`config: FILE` reuses a stage's own config file (its `out` yields to RUN_DIR/<stage>)."""
    spec = {
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "data": {"kind": "prepare", "config": {"input": {"paths": ["corpus:peoples-daily"]}}},
            "tok": {"kind": "tokenizer"},
            "shards": {"kind": "tokenize"},
            "pretrain": {"kind": "pretrain", "config": str(ROOT / "configs" / "pretrain-tiny.yaml")},
        },
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    stages = {s.name: s for s in plan_pipeline(load_pipeline(path), str(path))}
    assert stages["pretrain"].config.out == str(tmp_path / "run" / "pretrain")
    assert stages["pretrain"].config.data.shards == str(tmp_path / "run" / "shards")
    assert stages["pretrain"].config.model.d_model == 256  # from the file
    assert stages["shards"].refs == {"data": "data", "tokenizer": "tok"}
    spec["stages"]["pretrain"]["config"] = {"out": "elsewhere"}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(ConfigError, match="stages.pretrain.out: set by the pipeline"):
        plan_pipeline(load_pipeline(path), str(path))


def test_cli_run_skips_a_finished_run_and_prints_the_summary(finished, capsys):
    path, run, _ = finished
    assert main(["run", str(path), "--run-dir", str(run), "baselines.split=test"]) == 0  # the default: nothing changes
    err = capsys.readouterr().err
    assert err.count("up to date, skipped") == 6
    assert "(and report.md)" in err and "tfidf-logreg" in err


def test_a_run_directory_in_use_is_refused(tmp_path):
    import subprocess
    import sys

    path = _pipeline(tmp_path)
    (tmp_path / "run").mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "run" / ".lmforge-run.lock").write_text(f"{other.pid}\n")
        with pytest.raises(ConfigError, match=f"another `lmforge run` \\(pid {other.pid}\\)"):
            _run(path)
    finally:
        other.kill()
        other.wait()
    assert not (tmp_path / "run" / "sentiment").exists()


def test_shards_table_shows_tokenizer_hashes_shortened(tmp_path):
    from lmforge.pipeline.registry import get_kind

    full = "0123456789abcdef" * 4
    meta = {"splits": {"train": {"source": "data/train.jsonl", "tokenizer_hash": full, "tokens": 1234},
                       "validation": {"source": "data/validation.jsonl", "tokenizer_hash": full, "tokens": 56}}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    report = get_kind("tokenize").report(tmp_path)
    title, header, body = report.tables[0]
    column = header.index("tokenizer_hash")
    assert [row[column] for row in body] == [full[:12], full[:12]]
    assert body[0][header.index("tokens")] == "1,234"


def test_an_onnx_export_stage_without_onnxruntime_is_refused_before_anything_runs(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ConfigError, match=r"export.*to: int8.*pip install 'lmforge\[onnx\]'"):
        plan_pipeline(load_pipeline(_pipeline(tmp_path)))
    assert not (tmp_path / "run").exists()
