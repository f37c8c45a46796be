"""`lmforge evaluate --baselines` end to end on the prepared review data, and its one-line errors."""

from __future__ import annotations

import json

import numpy as np

from lmforge.cli import main


def test_evaluate_baselines_writes_the_report(reviews_prepared, tmp_path, capsys):
    data, _ = reviews_prepared
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        "".join(json.dumps({"step": s, "split": "train", "loss": 5.0 - s / 10}) + "\n" for s in range(20))
    )
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--baselines",
            "--data",
            str(data),
            "--out",
            str(out),
            "--curves",
            str(metrics),
            "--no-progress",
            "baselines.max_train_examples=1500",
            "ece_bins=10",
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [r["name"] for r in report["rows"]] == ["majority", "tfidf-logreg"]
    assert (
        report["rows"][1]["metrics"]["ece_bins"] == 10 and report["rows"][1]["info"]["train_examples"] == 1500
    )
    assert set(report["plots"].values()) == {
        "confusion_majority.png",
        "confusion_tfidf-logreg.png",
        "per_class.png",
        "curves.png",
    }
    assert all((out / f).is_file() for f in report["plots"].values())
    assert "max_train_examples: 1500" in (out / "config.yaml").read_text()


def test_evaluate_errors_are_one_line(reviews_prepared, tmp_path, capsys):
    data, _ = reviews_prepared
    cases = [
        (["evaluate", "--data", str(data)], "nothing to evaluate: pass --baselines"),
        (["evaluate", "--baselines"], "no data to evaluate on: give --data DIR"),
        (["evaluate", "--baselines", "--data", str(tmp_path / "nope")], "prepared data directory not found"),
        (["evaluate", "--baselines", "--data", str(data), "baselines.tfidf.C=0"], "'baselines.tfidf.C'"),
        (
            ["evaluate", "--baselines", "--data", str(data), "--curves", str(tmp_path / "m.jsonl")],
            "metrics file not found",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_a_model_plugs_in_as_one_more_row(reviews_prepared, tmp_path):
    """What `lmforge evaluate --model` will do: the model's predictions become a row next to the baselines."""
    from lmforge.data.prepared import read_labelled
    from lmforge.eval.evaluate import evaluate, make_evaluate_config
    from lmforge.eval.rows import prediction_row

    data, _ = reviews_prepared
    texts, truth = read_labelled(data, "test")
    # a stand-in "model": a two-word sentiment rule, with made-up confidences
    predicted = ["negative" if ("不" in t or "差" in t) else "positive" for t in texts]
    probs = np.array([[0.8, 0.2] if p == "negative" else [0.3, 0.7] for p in predicted])  # (N, 2)
    row = prediction_row("rule", truth, predicted, probs, ["negative", "positive"], info={"note": "stand-in"})
    config = make_evaluate_config(
        {
            "data": str(data),
            "out": str(tmp_path),
            "progress": False,
            "baselines": {"enabled": True, "max_train_examples": 1000},
        }
    )
    report = evaluate(config, [row])
    assert [(r["name"], r["kind"]) for r in report["rows"]] == [
        ("rule", "model"),
        ("majority", "baseline"),
        ("tfidf-logreg", "baseline"),
    ]
    accuracy = float(np.mean(np.array(predicted) == np.array(truth)))
    assert report["rows"][0]["metrics"]["accuracy"] == accuracy
    table = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert f"| rule | model | 1,729 | {accuracy:.4f} |" in table
