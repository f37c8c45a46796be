"""The built-in stage kinds: prepare, tokenizer, tokenize, pretrain, evaluate, export.

Each is a thin adapter over the stage's own ``make_*_config`` and run function; what a stage
reports comes from the files it wrote, so a skipped stage reports the same as one that just ran.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel, Field

from lmforge.config import ConfigError, Section, build_config
from lmforge.pipeline.registry import StageKind, StageReport, register
from lmforge.serve import ExportTarget

__all__ = ["ExportStageConfig"]


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """Import a stage only when it is used (torch and sklearn are slow to import)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(__import__(module, fromlist=[name]), name)(*args, **kwargs)

    return call


# --- prepare ---------------------------------------------------------------------------------


def _prepare_report(out: Path) -> StageReport:
    report = _json(out / "report.json")
    if not report:
        return StageReport()
    counts, splits = report.get("counts", {}), report.get("splits", {})
    split_text = " / ".join(f"{splits[s]['documents']:,}" for s in ("train", "validation", "test") if s in splits)
    rows = [(f"{step['step']}", f"{step['documents']:,}") for step in report.get("funnel", [])]
    rows += [("split train / validation / test", split_text)]
    reasons = sorted(report.get("rejected_by_reason", {}).items(), key=lambda kv: -kv[1])
    tables = [
        ("Data funnel", ["step", "documents"], [[s["step"], f"{s['documents']:,}"] for s in report.get("funnel", [])]),
        ("Rejected, by reason", ["reason", "documents"], [[r, f"{n:,}"] for r, n in reasons] or [["(none)", "0"]]),
        (
            "Splits",
            ["split", "documents", "labels"],
            [
                [s, f"{v['documents']:,}", ", ".join(f"{k} {n:,}" for k, n in (v.get("labels") or {}).items())]
                for s, v in splits.items()
            ],
        ),
    ]
    rows.insert(0, ("inputs", ", ".join(report.get("inputs", []))))
    if counts:
        rows.append(("rejected", f"{counts.get('rejected', 0):,} (reasons in the report)"))
    return StageReport(rows=rows, tables=tables)


register(
    StageKind(
        name="prepare",
        make_config=_lazy("lmforge.data.prepare", "make_prepare_config"),
        run=_lazy("lmforge.data.prepare", "prepare"),
        done=lambda out: (out / "DONE").is_file(),
        paths_key="input.paths",
        report=_prepare_report,
    )
)


# --- tokenizer -------------------------------------------------------------------------------


def _tokenizer_report(out: Path) -> StageReport:
    meta = _json(out / "meta.json")
    if not meta:
        return StageReport()
    rows = [("kind", meta["kind"]), ("vocabulary", f"{meta['vocab_size']:,}")]
    cov = meta.get("coverage")
    if cov:
        rows += [
            (f"unknown-token rate ({cov['split']})", f"{cov['unknown_token_rate']:.4%}"),
            ("tokens per character", f"{cov['tokens_per_char']:.3f}"),
        ]
    return StageReport(rows=rows, tables=[("Tokenizer", ["what", "value"], [list(r) for r in rows])])


register(
    StageKind(
        name="tokenizer",
        make_config=_lazy("lmforge.tokenize.tokenizer", "make_tokenizer_config"),
        run=_lazy("lmforge.tokenize.tokenizer", "train_tokenizer"),
        done=lambda out: (out / "meta.json").is_file() and (out / "tokenizer.json").is_file(),
        inputs={"data": (("prepare",), False)},  # optional: from_file adopts a tokenizer instead
        report=_tokenizer_report,
    )
)


# --- tokenize --------------------------------------------------------------------------------


_HASH_CHARS = 12  # enough to tell tokenizers apart at a glance (as the tokenize stage's messages show them)


def _shard_cell(key: str, value: Any) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)[:_HASH_CHARS] if key.endswith("hash") else str(value)


def _tokenize_report(out: Path) -> StageReport:
    meta = _json(out / "meta.json")
    splits = meta.get("splits", {})
    body = [[s, *(_shard_cell(k, v) for k, v in c.items())] for s, c in splits.items()]
    header = ["split", *next(iter(splits.values()), {}).keys()]
    tokens = {s: c.get("tokens") for s, c in splits.items() if isinstance(c, dict)}
    rows = [(f"{s} tokens", f"{n:,}") for s, n in tokens.items() if isinstance(n, int)]
    return StageReport(rows=rows, tables=[("Token shards", list(header), body)] if body else [])


register(
    StageKind(
        name="tokenize",
        make_config=_lazy("lmforge.tokenize.make_shards", "make_tokenize_config"),
        run=_lazy("lmforge.tokenize.make_shards", "tokenize"),
        done=lambda out: (out / "DONE").is_file(),
        inputs={"data": (("prepare",), True), "tokenizer": (("tokenizer",), True)},
        defaults={"overwrite": True},  # the pipeline owns RUN_DIR/<stage>; a changed tokenizer re-runs it
        report=_tokenize_report,
    )
)


# --- pretrain --------------------------------------------------------------------------------


def _pretrain_report(out: Path) -> StageReport:
    from lmforge.train.track import read_metrics

    metrics = out / "metrics.jsonl"
    curves, last = read_metrics(metrics) if metrics.is_file() else ({}, {})
    rows: list[tuple[str, str]] = []
    config = _json(out / "config.json").get("model", {})
    if config:
        rows.append(("model", f"{config['n_layers']} layers x {config['d_model']} wide, vocab {config['vocab_size']:,}"))
    for split, (steps, values) in curves.items():
        rows.append((f"{split} loss (step {steps[-1]:,})", f"{values[-1]:.4f}"))
    if last:
        rows.append(("throughput", f"{last['tokens_per_s']:,.0f} tokens/s"))
    weights = out / "model.safetensors"
    if weights.is_file():
        rows.append(("weights", f"{weights.stat().st_size / 2**20:.1f} MiB"))
    return StageReport(rows=rows, tables=[("Pretraining", ["what", "value"], [list(r) for r in rows])], curves=curves)


def _pretrain_check(config: BaseModel, upstream: Callable[[str], Optional[tuple[str, str, BaseModel]]]) -> None:
    """An MLM objective needs a mask token: known from the tokenizer stage, or the shards' meta.json."""
    objective = getattr(config, "objective").kind
    if objective == "clm":
        return
    feed = upstream("data.shards")
    tokenizer_kind: Optional[str] = None
    if feed is not None:
        tokenize_feed = upstream("data.shards>tokenizer")
        if tokenize_feed is not None and getattr(tokenize_feed[2], "from_file", None) is None:
            tokenizer_kind = getattr(tokenize_feed[2], "kind", None)
            specials = getattr(tokenize_feed[2], "special_tokens", [])
            if tokenizer_kind == "bpe" and "[MASK]" not in specials and "<mask>" not in specials:
                raise ConfigError(
                    f"objective.kind={objective} needs a mask token, but stage {tokenize_feed[0]!r} trains a bpe "
                    f"tokenizer without one (use kind: wordpiece or bpe-bert, or add special_tokens: ['[MASK]'])"
                )
    else:
        meta = _json(Path(getattr(config, "data").shards) / "meta.json")
        if meta and meta.get("tokenizer", {}).get("special_tokens", {}).get("mask") is None:
            raise ConfigError(f"objective.kind={objective}: the shards' tokenizer has no mask token")


register(
    StageKind(
        name="pretrain",
        make_config=_lazy("lmforge.train.pretrain", "make_pretrain_config"),
        run=_lazy("lmforge.train.pretrain", "pretrain"),
        done=lambda out: (out / "model.safetensors").is_file(),
        inputs={"data.shards": (("tokenize",), True)},
        defaults={"resume": "auto"},  # an interrupted pretrain continues from its newest checkpoint
        check=_pretrain_check,
        report=_pretrain_report,
    )
)


# --- finetune --------------------------------------------------------------------------------

register(
    StageKind(
        name="finetune",
        make_config=_lazy("lmforge.finetune.stage", "make_finetune_config"),
        run=_lazy("lmforge.finetune.stage", "finetune"),
        done=lambda out: (out / "report" / "report.json").is_file(),
        inputs={"data.path": (("prepare",), True), "init_from": (("pretrain", "finetune"), False)},
        defaults={"resume": "auto"},  # an interrupted fine-tuning run continues from its newest checkpoint
        report=lambda out: _evaluate_report(out / "report"),  # the test report: model row next to the baselines
    )
)


# --- evaluate --------------------------------------------------------------------------------


def _evaluate_report(out: Path) -> StageReport:
    from lmforge.eval.report import report_tables  # the evaluation report's own tables, reused as they are

    report = _json(out / "report.json")
    if not report:
        return StageReport()
    rows = []
    for row in report["rows"]:
        m = row["metrics"]
        if m.get("task") == "classification":
            rows.append((f"{row['name']} ({row['kind']})", f"accuracy {m['accuracy']:.4f}, macro-F1 {m['macro']['f1']:.4f}"))
        elif m.get("task") == "tagging":
            rows.append((f"{row['name']} ({row['kind']})", f"span F1 {m['f1']:.4f}"))
        elif m.get("task") == "multilabel":
            scores = f"micro-F1 {m['micro']['f1']:.4f}, macro-F1 {m['macro']['f1']:.4f}"
            rows.append((f"{row['name']} ({row['kind']})", scores))
        elif m.get("task") == "retrieval":
            rows.append((f"{row['name']} ({row['kind']})", f"recall@1 {m['recall@1']:.4f}, MRR@10 {m['mrr@10']:.4f}"))
        elif m.get("task") == "regression" and m.get("pearson") is not None:
            rows.append((f"{row['name']} ({row['kind']})", f"Pearson {m['pearson']:.4f}, RMSE {m['rmse']:.4f}"))
    images = [(title, out / file) for title, file in report.get("plots", {}).items()]
    return StageReport(rows=rows, tables=report_tables(report), images=images)


register(
    StageKind(
        name="evaluate",
        make_config=_lazy("lmforge.eval.evaluate", "make_evaluate_config"),
        run=_lazy("lmforge.eval.evaluate", "evaluate"),
        done=lambda out: (out / "report.json").is_file(),
        inputs={"data": (("prepare",), True)},
        report=_evaluate_report,
    )
)


# --- export ----------------------------------------------------------------------------------


class ExportStageConfig(Section):
    """`lmforge export` as a pipeline stage: a model directory -> Hugging Face, ONNX, int8 or ONNX int8."""

    model: Optional[str] = Field(None, description="An lmforge model directory (a pretrain or finetune output).")
    to: ExportTarget = Field(
        "int8", description="hf: BERT/GPT-2 layout (post-LN encoders only); onnx-int8: onnxruntime's int8 graph.")
    out: Optional[str] = None


def _export(config: BaseModel) -> Any:
    from lmforge.serve.export import export_model

    assert isinstance(config, ExportStageConfig) and config.model and config.out
    return export_model(config.model, config.to, config.out)


def _export_check(config: BaseModel, upstream: Callable[[str], Optional[tuple[str, str, BaseModel]]]) -> None:
    """The Hugging Face layout is BERT's (post-LN) for encoders: a pre-LN pretrain cannot go there."""
    from lmforge.serve.export import ONNX_TARGETS, missing_onnx_package

    to = getattr(config, "to")
    package = missing_onnx_package() if to in ONNX_TARGETS else None
    if package:  # found now, not after the training stages before it
        raise ConfigError(f"export stage: to: {to} is written with onnx and onnxruntime, and {package} is not "
                          f"installed: pip install 'lmforge[onnx]' (or disable the stage: export.enabled=false)")
    feed = upstream("model")
    model = getattr(feed[2], "model", None) if feed is not None else None
    if to == "hf" and model is not None and not model.causal and model.norm == "pre":
        raise ConfigError(
            f"to: hf exports encoders as BERT, which is post-LN, but stage {feed[0]!r} trains model.norm=pre; "
            f"use to: int8, onnx or onnx-int8, or model.norm: post"
        )


def _export_report(out: Path) -> StageReport:
    files = sorted(p for p in out.iterdir() if p.is_file() and not p.name.startswith(".")) if out.is_dir() else []
    size = sum(p.stat().st_size for p in files)
    rows = [
        ("files", ", ".join(p.name for p in files)),
        ("size", f"{size / 2**20:.1f} MiB"),
        ("query it", f"lmforge predict --model {out} TEXT"),
        ("serve it", f"lmforge serve --model {out}"),
    ]
    return StageReport(rows=rows, tables=[("Export", ["what", "value"], [list(r) for r in rows])])


register(
    StageKind(
        name="export",
        make_config=lambda *layers, source="config": build_config(ExportStageConfig, *layers, source=source),
        run=_export,
        done=lambda out: (out / "config.json").is_file(),
        inputs={"model": (("pretrain", "finetune"), True)},
        check=_export_check,
        report=_export_report,
    )
)
