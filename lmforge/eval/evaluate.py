"""The `lmforge evaluate` stage: score systems on one split of a prepared directory and write the report.

A system enters the report as a row from ``prediction_row``: the baselines make theirs here, and a
fine-tuned model's predictions (y_true, y_pred, probabilities) become one more row the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


from lmforge.config import ConfigError, build_config, write_config
from lmforge.data.prepared import check_prepared
from lmforge.eval.config import EvaluateConfig
from lmforge.eval.report import write_report
from lmforge.eval.scoring import model_rows
from lmforge.train.track import read_metrics

__all__ = ["evaluate", "make_evaluate_config"]


def make_evaluate_config(*layers: dict[str, Any], source: str = "config") -> EvaluateConfig:
    return build_config(EvaluateConfig, *layers, source=source)


def evaluate(config: EvaluateConfig, rows: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Score the baselines (if enabled) next to the given rows and write the report; returns it."""
    if not config.data:
        raise ConfigError("no data to evaluate on: give --data DIR (a `lmforge data prepare` output)")
    data = check_prepared(config.data)
    if not rows and not config.baselines.enabled and not config.models:
        raise ConfigError("nothing to evaluate: pass --baselines and/or --model DIR")
    curves = read_metrics(config.curves)[0] if config.curves else None  # checked before the slow part
    out = Path(config.out) if config.out else data / "evaluation"
    all_rows = list(rows)
    task = config.task or _model_task(config)
    if task == "retrieval":
        all_rows += _retrieval_rows(data, config)
    else:
        if config.models:
            all_rows += model_rows(config.models, str(data), config.split)
        if config.baselines.enabled:
            all_rows += _baseline_rows(data, config, task)
    report = write_report(all_rows, out, data=str(data), split=config.split, curves=curves)
    write_config(config, out / "config.yaml")
    if config.progress:
        _print_summary(report, out)
    return report


def _retrieval_rows(data: Path, config: EvaluateConfig) -> list[dict[str, Any]]:
    """Each model (a bi-encoder, or any encoder: it embeds) and, with baselines, BM25 on the split's pairs."""
    from lmforge.data.prepared import pair_field
    from lmforge.eval.retrieval import bm25_row, model_retrieval_row, retrieval_split
    from lmforge.serve.predictor import load

    pair = pair_field(data)
    if pair is None:
        raise ConfigError(f"{data}: task=retrieval needs a text-pair directory (data prepare --pair-field)")
    split = retrieval_split(str(data), config.split, "text", pair)
    rows = [model_retrieval_row(load(m), split, f"{Path(m).name}", info={"model": m}) for m in config.models]
    return rows + ([bm25_row(split)] if config.baselines.enabled else [])


def _baseline_rows(data: Path, config: EvaluateConfig, task: str | None) -> list[dict[str, Any]]:
    """Classification baselines for labelled data, tagging baselines for BMES or part-of-speech rows."""
    from lmforge.data.prepared import iter_split
    from lmforge.data.tagged import detect_tag_task
    from lmforge.eval.tagging_baselines import run_tagging_baselines

    first = next(iter(iter_split(data, "train")), None)
    if first is None:
        raise ConfigError(f"{data}: the train split is empty")
    tagging = detect_tag_task(first)
    if tagging is not None:
        return run_tagging_baselines(str(data), config.split, tagging)
    from lmforge.eval.baselines import run_baselines

    return run_baselines(str(data), config.split, config.baselines, config.ece_bins, task)


def _model_task(config: EvaluateConfig) -> str | None:
    """The label kind of the first model given (multilabel, regression), for the baselines."""
    if not config.models:
        return None
    from lmforge.model.modeldir import read_json

    model = read_json(Path(config.models[0]) / "config.json")
    if "retrieval" in model:
        return "retrieval"
    return {"multi_label": "multilabel", "regression": "regression"}.get(model.get("problem") or "")


def _print_summary(report: dict[str, Any], out: Path) -> None:
    from lmforge.progress import console

    for row in report["rows"]:
        m = row["metrics"]
        if m.get("task") == "classification":
            ece = f", ECE {m['ece']:.3f}" if "ece" in m else ""
            console.print(
                f"{row['name']:>16s}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro']['f1']:.4f}{ece}"
            )
        elif m.get("task") == "multilabel":
            console.print(f"{row['name']:>16s}: micro-F1 {m['micro']['f1']:.4f}, macro-F1 {m['macro']['f1']:.4f}, "
                          f"subset accuracy {m['subset_accuracy']:.4f}")
        elif m.get("task") == "regression":
            r = "–" if m["pearson"] is None else f"{m['pearson']:.4f}"
            rho = "–" if m["spearman"] is None else f"{m['spearman']:.4f}"
            console.print(f"{row['name']:>16s}: Pearson {r}, Spearman {rho}, RMSE {m['rmse']:.4f}")
        elif m.get("task") == "retrieval":
            console.print(f"{row['name']:>16s}: " + ", ".join(f"{k} {m[k]:.4f}" for k in ("recall@1", "recall@5",
                                                                                          "recall@10", "mrr@10")))
        elif m.get("task") == "tagging":
            console.print(
                f"{row['name']:>16s}: span P {m['precision']:.4f}, R {m['recall']:.4f}, F1 {m['f1']:.4f}"
            )
    console.print(f"report: {out / 'report.md'} (and report.html, report.json)")
