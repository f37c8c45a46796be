"""The report: files written, HTML self-contained, JSON round trip, Markdown numbers = metrics."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lmforge.config import ConfigError
from lmforge.eval.rows import language_model_row, prediction_row
from lmforge.eval.metrics import span_metrics
from lmforge.eval.report import write_report
from lmforge.train.track import read_metrics

LABELS = ["negative", "neutral", "positive"]


def _rows() -> list[dict]:
    rng = np.random.default_rng(0)
    truth = [LABELS[i] for i in rng.integers(0, 3, 120)]
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=120)  # (N, 3)
    model = [LABELS[i] for i in probs.argmax(1)]
    return [
        prediction_row("tiny-model", truth, model, probs, LABELS, info={"epochs": 2}),
        prediction_row("majority", truth, ["neutral"] * 120, None, LABELS, kind="baseline"),
    ]


def _write_curves(path: Path) -> Path:
    lines = [{"step": s, "split": "train", "loss": 3.0 / (1 + s), "lr": 1e-3} for s in range(1, 40)]
    lines += [{"step": s, "split": "validation", "loss": 3.2 / (1 + s)} for s in range(10, 40, 10)]
    lines.insert(3, {"step": 3, "tokens_per_s": 1234.0})  # a line without a loss is skipped
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    curves = read_metrics(_write_curves(out / "metrics.jsonl"))[0]
    report = write_report(_rows(), out, data="some/dir", split="test", curves=curves)
    return out, report


def _markdown_table(text: str, title: str) -> list[list[str]]:
    lines = text.split(f"## {title}\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_files_and_json_round_trip(written):
    out, report = written
    for name in (
        "report.json",
        "report.md",
        "report.html",
        "per_class.png",
        "curves.png",
        "confusion_tiny-model.png",
        "confusion_majority.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert loaded == json.loads(json.dumps(report))
    assert (
        loaded["rows"][0]["metrics"]["confusion_matrix"] == report["rows"][0]["metrics"]["confusion_matrix"]
    )
    assert loaded["curves"]["validation"] == {
        "steps": [10, 20, 30],
        "values": pytest.approx([3.2 / 11, 3.2 / 21, 3.2 / 31]),
    }
    assert len(loaded["curves"]["train"]["steps"]) == 39


def test_markdown_numbers_match_the_metrics(written):
    out, report = written
    text = (out / "report.md").read_text(encoding="utf-8")
    summary = _markdown_table(text, "Summary (classification)")
    by_name = {r["name"]: r["metrics"] for r in report["rows"]}
    assert [row[0] for row in summary] == ["tiny-model", "majority"] and summary[1][1] == "baseline"
    for row in summary:
        m = by_name[row[0]]
        assert int(row[2].replace(",", "")) == m["examples"] == 120
        expected = [
            m["accuracy"],
            m["macro"]["precision"],
            m["macro"]["recall"],
            m["macro"]["f1"],
            m["micro"]["f1"],
            m["weighted"]["f1"],
        ]
        assert [float(x) for x in row[3:9]] == pytest.approx(expected, abs=5e-5)
        for cell, key in zip(row[9:12], ("roc_auc", "pr_auc", "ece")):  # "–": not computed or undefined
            assert (cell == "–") if m.get(key) is None else float(cell) == pytest.approx(m[key], abs=5e-5)
    per_class = _markdown_table(text, "Per class")
    assert [row[0] for row in per_class] == LABELS
    for row in per_class:
        assert int(row[1]) == by_name["tiny-model"]["per_class"][row[0]]["support"]
        for n, name in enumerate(("tiny-model", "majority")):
            scores = by_name[name]["per_class"][row[0]]
            got = [float(x) for x in row[2 + 3 * n : 5 + 3 * n]]
            assert got == pytest.approx([scores["precision"], scores["recall"], scores["f1"]], abs=5e-5)


def test_html_is_self_contained(written):
    out, report = written
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "src='http" not in page and "<link" not in page and "<script" not in page
    for file in report["plots"].values():
        encoded = base64.b64encode((out / file).read_bytes()).decode("ascii")
        assert f"src='data:image/png;base64,{encoded}'" in page, file
    assert page.count("<img") == len(report["plots"]) == 4
    assert "class='baseline'" in page and "tiny-model" in page


def test_tagging_rows_get_span_tables(tmp_path):
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O"]]
    row = {"name": "ner-model", "kind": "model", "metrics": span_metrics(gold, pred), "info": {}}
    write_report([row], tmp_path, data="pd", split="test")
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    summary = _markdown_table(text, "Summary (tagging)")
    assert [float(x) for x in summary[0][3:6]] == pytest.approx([1.0, 2 / 3, 0.8], abs=5e-5)
    assert [r[0] for r in _markdown_table(text, "Per entity type")] == ["LOC", "ORG", "PER"]


def test_language_model_rows(tmp_path):
    rows = [
        language_model_row("lm", 3.5 * 2048, 2048),
        language_model_row("unigram", 7.0 * 2048, 2048, kind="baseline"),
    ]
    write_report(rows, tmp_path, data="pd", split="validation")
    summary = _markdown_table(
        (tmp_path / "report.md").read_text(encoding="utf-8"), "Summary (language model)"
    )
    assert [r[0] for r in summary] == ["lm", "unigram"] and summary[0][2] == "2,048"
    assert float(summary[0][3]) == pytest.approx(3.5) and float(
        summary[0][4].replace(",", "")
    ) == pytest.approx(33.12, abs=0.01)
    assert float(summary[1][4].replace(",", "")) == pytest.approx(1096.63, abs=0.01)


def test_metrics_reader_reads_the_loop_format_and_skips_a_cut_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "precision": "fp32"}\n{"step": 5, "train_loss": 2.5, "tokens_per_s": 10.0}\n'
                    '{"step": 5, "val_loss": 2.7, "val_ppl": 14.9}\n{"step": 10, "train_loss": 2.0, "tokens_per_s": 12.0}\n'
                    '{"step": 15, "train_lo')
    curves, last = read_metrics(path)
    assert curves == {"train": ([5, 10], [2.5, 2.0]), "validation": ([5], [2.7])}
    assert last["tokens_per_s"] == 12.0


def test_bad_curves_and_rows_are_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "split": "train", "loss": 2.0}\n{"step": "x", "train_loss": 1.0}\n')
    with pytest.raises(ConfigError, match=r"metrics.jsonl:2: 'step' must be an integer"):
        read_metrics(path)
    path.write_text('{"step": 1, "train_loss": 2.0}\nnot json\n{"step": 2, "train_loss": 1.0}\n')
    with pytest.raises(ConfigError, match=r"metrics.jsonl:2: not valid JSON"):
        read_metrics(path)
    path.write_text('{"step": 1, "train_loss": "high"}\n')
    with pytest.raises(ConfigError, match=r"metrics.jsonl:1: the train loss must be a number"):
        read_metrics(path)
    with pytest.raises(ConfigError, match="metrics file not found"):
        read_metrics(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="distinct names"):
        write_report(_rows()[:1] * 2, tmp_path, data="d", split="test")


@pytest.mark.slow
def test_html_renders_in_headless_chromium(written, tmp_path):
    """Screenshot of report.html, for a person to look at (kept in the pytest tmp dir)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    out, _ = written
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,2600",
            (out / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a blank page compresses to a few KB
