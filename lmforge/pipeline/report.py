"""The run report: RUN_DIR/report.md and a self-contained RUN_DIR/report.html (PNGs inlined),
plus the final summary table on the terminal. Built from the files each stage wrote, so a run
whose stages were all skipped reports the same numbers as the run that made them."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Sequence

import yaml
from rich.markup import escape

from lmforge.eval.report import REPORT_CSS, html_cell  # the evaluation report's look, shared
from lmforge.pipeline.config import PipelineConfig
from lmforge.pipeline.plan import PlannedStage
from lmforge.pipeline.registry import StageReport, StageResult

__all__ = ["print_run_summary", "write_run_report"]


def _stage_reports(stages: Sequence[PlannedStage], plots: Path) -> list[tuple[PlannedStage, StageReport]]:
    """Each stage's report; training curves become PNGs under ``plots``."""
    from lmforge.eval.plots import plot_curves

    out = []
    for stage in stages:
        report = stage.kind.report(stage.out)
        if report.curves:
            plots.mkdir(parents=True, exist_ok=True)
            path = plot_curves(report.curves, plots / f"curves_{stage.name}.png")
            report.images.insert(0, (f"{stage.name}: training and validation loss", path))
        out.append((stage, report))
    return out


def _overview(results: Sequence[StageResult], run_dir: Path) -> tuple[list[str], list[list[str]]]:
    header = ["stage", "kind", "status", "seconds", "output"]
    body = [
        [r.name, r.kind, r.status, f"{r.seconds:.1f}", os.path.relpath(r.out, run_dir)] for r in results
    ]
    return header, body


def _md_table(title: str, header: list[str], body: list[list[str]], level: str = "###") -> list[str]:
    lines = [f"{level} {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in body]
    return lines + [""]


def _html_table(title: str, header: list[str], body: list[list[str]], level: str = "h3") -> str:
    esc = html.escape
    rows = "".join("<tr>" + "".join(html_cell(str(c)) for c in row) + "</tr>" for row in body)
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    return f"<{level}>{esc(title)}</{level}><table><tr>{head}</tr>{rows}</table>"


def _config_yaml(stage: PlannedStage) -> str:
    return yaml.safe_dump(stage.config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def render_markdown(pipeline: PipelineConfig, results: Sequence[StageResult], reports, run_dir: Path) -> str:
    lines = ["# lmforge run report", ""]
    if pipeline.description:
        lines += [pipeline.description.strip(), ""]
    lines += [f"Run directory `{run_dir}`.", ""]
    lines += _md_table("Stages", *_overview(results, run_dir), level="##")
    for stage, report in reports:
        lines += [f"## {stage.name} ({stage.kind.name})", ""]
        for title, header, body in report.tables:
            lines += _md_table(title, header, body)
        for caption, path in report.images:
            lines += [f"![{caption}]({os.path.relpath(path, run_dir)})", ""]
        lines += ["<details><summary>resolved config</summary>", "", "```yaml", _config_yaml(stage).rstrip(), "```", "", "</details>", ""]
    return "\n".join(lines)


def render_html(pipeline: PipelineConfig, results: Sequence[StageResult], reports, run_dir: Path) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>lmforge run report</title>",
        f"<style>{REPORT_CSS}\npre{{background:#f6f6f6;padding:0.6em;overflow:auto}}</style></head><body>",
        "<h1>lmforge run report</h1>",
    ]
    if pipeline.description:
        parts.append(f"<p class='note'>{esc(pipeline.description.strip())}</p>")
    parts.append(f"<p class='note'>Run directory {esc(str(run_dir))}.</p>")
    parts.append(_html_table("Stages", *_overview(results, run_dir), level="h2"))
    for stage, report in reports:
        parts.append(f"<h2>{esc(stage.name)} ({esc(stage.kind.name)})</h2>")
        parts += [_html_table(title, header, body) for title, header, body in report.tables]
        for caption, path in report.images:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{esc(caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
        parts.append(f"<details><summary>resolved config</summary><pre>{esc(_config_yaml(stage))}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_run_report(pipeline: PipelineConfig, stages: Sequence[PlannedStage], results: Sequence[StageResult]) -> Path:
    """RUN_DIR/report.md and RUN_DIR/report.html; returns the HTML path."""
    run_dir = Path(pipeline.run_dir)
    reports = _stage_reports(stages, run_dir / "report_files")
    (run_dir / "report.md").write_text(render_markdown(pipeline, results, reports, run_dir), encoding="utf-8")
    path = run_dir / "report.html"
    path.write_text(render_html(pipeline, results, reports, run_dir), encoding="utf-8")
    return path


def print_run_summary(stages: Sequence[PlannedStage], results: Sequence[StageResult], run_dir: Path) -> None:
    """The final table: each stage's headline numbers, then where everything is."""
    from lmforge.progress import print_summary

    status = {r.name: r.status for r in results}
    rows: list[tuple[str, str]] = []
    for stage in stages:
        rows.append((f"{stage.name} ({stage.kind.name})", f"{status.get(stage.name, '')}  {stage.out}"))
        rows += [(f"  {what}", value) for what, value in stage.kind.report(stage.out).rows]
    rows.append(("report", f"{run_dir / 'report.html'} (and report.md)"))
    print_summary(f"lmforge run: {run_dir}", [(escape(a), escape(b)) for a, b in rows])
