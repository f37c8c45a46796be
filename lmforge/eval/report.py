"""The evaluation report: report.json (the record), report.md (to read or diff) and a self-contained
report.html (plots embedded as base64 PNG, so it opens offline and can be mailed), plus the PNGs.

A report is a list of rows, one per system scored on the same split: the model(s) and the
baselines side by side in the same tables, so every number has context.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from lmforge.eval.plots import plot_confusion_matrix, plot_curves, plot_per_class

__all__ = ["FORMAT_VERSION", "REPORT_CSS", "html_cell", "render_markdown", "report_tables", "write_report"]

FORMAT_VERSION = 1

# Columns of the summary table per task: (header, path into a row's metrics)
SUMMARY_COLUMNS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "classification": [
        ("accuracy", ("accuracy",)),
        ("macro P", ("macro", "precision")),
        ("macro R", ("macro", "recall")),
        ("macro F1", ("macro", "f1")),
        ("micro F1", ("micro", "f1")),
        ("weighted F1", ("weighted", "f1")),
        ("ROC-AUC", ("roc_auc",)),
        ("PR-AUC", ("pr_auc",)),
        ("ECE", ("ece",)),
    ],
    "multilabel": [
        ("subset accuracy", ("subset_accuracy",)),
        ("micro F1", ("micro", "f1")),
        ("macro F1", ("macro", "f1")),
        ("Hamming loss", ("hamming_loss",)),
        ("ROC-AUC", ("roc_auc",)),
        ("PR-AUC", ("pr_auc",)),
        ("P@1", ("precision_at_1",)),
        ("NDCG", ("ndcg",)),
    ],
    "regression": [
        ("Pearson", ("pearson",)),
        ("Spearman", ("spearman",)),
        ("R2", ("r2",)),
        ("RMSE", ("rmse",)),
        ("MAE", ("mae",)),
    ],
    "retrieval": [
        ("recall@1", ("recall@1",)),
        ("recall@5", ("recall@5",)),
        ("recall@10", ("recall@10",)),
        ("MRR@10", ("mrr@10",)),
    ],
    "tagging": [
        ("span P", ("precision",)),
        ("span R", ("recall",)),
        ("span F1", ("f1",)),
        ("token accuracy", ("token_accuracy",)),
    ],
    "language_model": [("loss", ("loss",)), ("perplexity", ("perplexity",))],
}


def _lookup(metrics: dict[str, Any], keys: tuple[str, ...]) -> Optional[float]:
    node: Any = metrics
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:,.2f}" if abs(value) >= 10 else f"{value:.4f}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "row"


def report_tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table in the report, shared by the Markdown and HTML writers."""
    tables = []
    rows = report["rows"]
    for task, columns in SUMMARY_COLUMNS.items():
        chosen = [r for r in rows if r["metrics"].get("task") == task]
        if chosen:
            header = ["system", "kind", "examples"] + [c for c, _ in columns]
            body = [
                [r["name"], r["kind"], f"{_size(r['metrics']):,}"]
                + [_fmt(_lookup(r["metrics"], keys)) for _, keys in columns]
                for r in chosen
            ]
            tables.append((f"Summary ({task.replace('_', ' ')})", header, body))
    for key, title in (("per_class", "Per class"), ("per_type", "Per entity type")):
        chosen = [r for r in rows if _breakdown(r["metrics"], key)]
        if not chosen:
            continue
        names = list(dict.fromkeys(c for r in chosen for c in r["metrics"][key]))
        header = [{"per_class": "class", "per_type": "type"}[key], "support"] + [
            f"{r['name']} {s}" for r in chosen for s in ("P", "R", "F1")
        ]
        body = []
        for name in names:
            support = next(r["metrics"][key][name]["support"] for r in chosen if name in r["metrics"][key])
            cells = [name, f"{support:,}"]
            for r in chosen:
                scores = r["metrics"][key].get(name, {})
                cells += [_fmt(scores.get(s)) for s in ("precision", "recall", "f1")]
            body.append(cells)
        tables.append((title, header, body))
    return tables


def _breakdown(metrics: dict[str, Any], key: str) -> dict[str, Any]:
    """Per-class or per-type scores worth showing; untyped spans ('_': segmentation) repeat the summary."""
    scores = metrics.get(key) or {}
    return {} if set(scores) <= {"_"} else scores


def _size(metrics: dict[str, Any]) -> int:
    return int(metrics.get("examples", metrics.get("sequences", metrics.get("tokens", 0))))


def _note(report: dict[str, Any], quote: str) -> str:
    """What the numbers are, for the reader: data, split, and the scores' meaning."""
    tasks = {r["metrics"].get("task") for r in report["rows"]}
    q = quote
    note = (
        f"Data {q}{report['data']}{q}, split {q}{report['split']}{q}. Scores are fractions (1.0 = perfect)."
    )
    if "classification" in tasks:
        note += " ECE is the expected calibration error (lower is better)."
    if "tagging" in tasks:
        note += " A span counts as right only when its boundaries and type both match."
    return note


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# {report['title']}", ""]
    lines += [_note(report, "`"), ""]
    for title, header, body in report_tables(report):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
        lines.append("")
    for row in report["rows"]:
        if row.get("info"):
            details = ", ".join(f"{k}={_info(v)}" for k, v in row["info"].items())
            lines.append(f"- **{row['name']}**: {details}")
    if any(r.get("info") for r in report["rows"]):
        lines.append("")
    if report["plots"]:
        lines += ["## Plots", ""]
        lines += [f"![{title}]({file})" for title, file in report["plots"].items()]
        lines.append("")
    return "\n".join(lines)


def _info(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


REPORT_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f2f2f2}td.t,th:first-child{text-align:left}tr.baseline td{color:#555}
figure{display:inline-block;margin:0.5em 1em 1em 0}figcaption{font-size:0.9em;color:#555}img{max-width:100%}
.note{color:#555}"""


def html_cell(text: str) -> str:
    """A table cell; text (names, kinds) aligns left, numbers right."""
    numeric = text.replace(",", "").replace(".", "", 1).lstrip("-").isdigit() or text in ("–", "inf", "nan")
    return f"<td>{html.escape(text)}</td>" if numeric else f"<td class='t'>{html.escape(text)}</td>"


def render_html(report: dict[str, Any], directory: Path) -> str:
    """The report as one HTML file, each PNG inlined as a data: URI."""
    esc = html.escape
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(report['title'])}</title>",
        f"<style>{REPORT_CSS}</style></head><body><h1>{esc(report['title'])}</h1>",
        f"<p class='note'>{esc(_note(report, ''))}</p>",
    ]
    kinds = {r["name"]: r["kind"] for r in report["rows"]}
    for title, header, body in report_tables(report):
        parts.append(
            f"<h2>{esc(title)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
        )
        for row in body:
            css = " class='baseline'" if kinds.get(row[0]) == "baseline" else ""
            parts.append(f"<tr{css}>" + "".join(html_cell(cell) for cell in row) + "</tr>")
        parts.append("</table>")
    if report["plots"]:
        parts.append("<h2>Plots</h2>")
    for title, file in report["plots"].items():
        data = base64.b64encode((directory / file).read_bytes()).decode("ascii")
        parts.append(
            f"<figure><img alt='{esc(title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{esc(title)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    rows: Sequence[dict[str, Any]],
    out: str | Path,
    *,
    data: str,
    split: str,
    title: str = "Evaluation report",
    curves: Optional[dict[str, tuple[list[int], list[float]]]] = None,
) -> dict[str, Any]:
    """Write report.json, report.md, report.html and the PNG plots into ``out``; returns the report dict."""
    if not rows:
        raise ValueError("a report needs at least one row")
    names = [r["name"] for r in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"report rows must have distinct names, got {names}")
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in [*directory.glob("confusion_*.png"), directory / "per_class.png", directory / "curves.png"]:
        stale.unlink(missing_ok=True)  # plots of an earlier report here would look like part of this one
    plots: dict[str, str] = {}
    for row in rows:
        metrics = row["metrics"]
        if "confusion_matrix" in metrics:
            file = f"confusion_{_slug(row['name'])}.png"
            plot_confusion_matrix(
                metrics["confusion_matrix"],
                metrics["labels"],
                f"confusion matrix: {row['name']}",
                directory / file,
            )
            plots[f"Confusion matrix: {row['name']}"] = file
    per_class = [
        (r["name"], _breakdown(r["metrics"], "per_class") or _breakdown(r["metrics"], "per_type"))
        for r in rows
    ]
    per_class = [(name, scores) for name, scores in per_class if scores]
    if per_class:
        plot_per_class(per_class, directory / "per_class.png")
        plots["Per-class precision, recall and F1"] = "per_class.png"
    if curves:
        plot_curves(curves, directory / "curves.png")
        plots["Training and validation loss"] = "curves.png"
    report = {
        "format_version": FORMAT_VERSION,
        "title": title,
        "data": str(data),
        "split": split,
        "rows": list(rows),
        "curves": {split_: {"steps": s, "values": v} for split_, (s, v) in (curves or {}).items()},
        "plots": plots,
    }
    (directory / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    (directory / "report.md").write_text(render_markdown(report), encoding="utf-8")
    (directory / "report.html").write_text(render_html(report, directory), encoding="utf-8")
    return report
