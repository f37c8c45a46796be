"""`lmforge quickstart`: the shipped quickstart pipeline (lmforge/configs/quickstart.yaml), fitted to
the machine it runs on.

The data stages run first (seconds; they are needed anyway and tell the plan the data's real size).
Then the pre-flight measures this machine's real pretraining and fine-tuning steps, and the time left
of the ``minutes`` target is split between the two: fine-tuning gets as many of the recipe's epochs as
leave pretraining its minimum of tokens, pretraining the rest. A machine whose bf16 is emulated runs
fp32 (the precision probe), and a machine too slow for the recipe to beat the baseline is told so at
the start, with the ``--minutes`` that would. Keys the user overrides are never refitted.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional

from lmforge.config import ConfigError, build_config
from lmforge.pipeline.config import PipelineConfig, load_pipeline
from lmforge.pipeline.preflight import Preflight
from lmforge.pipeline.run import StageResult, run_pipeline, scale_budgets

__all__ = ["QUICKSTART", "Fit", "fit_budgets", "fit_to_machine", "quickstart", "quickstart_pipeline"]

QUICKSTART = "quickstart.yaml"
# stages that run before the pre-flight: the data, the tokenizer and the baselines (cheap, and the
# baselines stage times the TF-IDF fit that the fine-tuning report repeats at the end)
EARLY_STAGES = ("sentiment", "text", "tokenizer", "shards", "baselines")
# Measured with step-capped pretraining (docs/pipelines.md): at 2.3M tokens the recipe's 3 epochs
# gave 85.05% test, 2 epochs 84.76%, 1 epoch 83.46% (TF-IDF 84.56%); at 1.2M tokens 3 epochs gave
# 83.98%. So fine-tuning keeps as many epochs as leave pretraining MIN_PRETRAIN_TOKENS.
MIN_PRETRAIN_TOKENS = 2.0e6
EPOCH_SLACK = 1.05  # the slower steps of long batches: epochs end fine-tuning, not its clock
# pretraining's start and end outside its budget (embedding init, final evaluation, saving) and the
# export: 53 s measured in a quickstart on a loaded 2-core CPU (PPMI-SVD init 14.6 s of it)
TAIL_MARGIN_S = 45.0


def shipped_config(name: str) -> Path:
    """A pipeline file shipped inside the package (found the same in a checkout and an install)."""
    return Path(str(resources.files("lmforge") / "configs" / name))


def quickstart_pipeline(
    minutes: Optional[float] = None,
    out: Optional[str] = None,
    device: Optional[str] = None,
    overrides: Iterable[str] = (),
    fitted: Iterable[str] = (),
) -> PipelineConfig:
    """The quickstart pipeline with budgets scaled to ``minutes`` and training on ``device``;
    ``fitted`` (key=value items of `fit_to_machine`) lie under the user's ``overrides``."""
    items, fitted = list(overrides), list(fitted)
    pipeline = load_pipeline(shipped_config(QUICKSTART), [], run_dir=out)
    if device is not None:
        trains = [n for n, e in pipeline.stages.items() if isinstance((e.get("config") or {}).get("train"), dict)]
        items = [f"{name}.train.device={device}" for name in trains] + items  # pretrain, finetune...
    if minutes is not None and not fitted:
        pipeline = load_pipeline(shipped_config(QUICKSTART), items, run_dir=out)
        return scale_budgets(pipeline, minutes / (pipeline.minutes or 10.0))
    return load_pipeline(shipped_config(QUICKSTART), fitted + items, run_dir=out)  # fitted budgets are absolute


@dataclass
class Fit:
    """What the quickstart chose for this machine, and why."""

    items: list[str]  # key=value overrides laid under the user's
    lines: list[str] = field(default_factory=list)
    too_slow: Optional[str] = None  # the warning, with the --minutes that would do


def _user_keys(overrides: Iterable[str]) -> set[str]:
    return {item.split("=", 1)[0].removeprefix("stages.").replace(".config.", ".") for item in overrides}


def fit_to_machine(pipeline: PipelineConfig, minutes: float, elapsed: float, baselines_s: float,
                   overrides: Iterable[str] = ()) -> tuple[Fit, Preflight]:
    """Measure this machine's steps (the pre-flight) and fit the budgets; returns the fit and the plan."""
    from lmforge.pipeline.plan import plan_pipeline
    from lmforge.pipeline.preflight import preflight

    stages = plan_pipeline(pipeline, "quickstart")
    plan = preflight(stages)
    epochs = next(s.config.epochs for s in stages if s.name == "finetune")
    return fit_budgets(plan, epochs, minutes, elapsed, baselines_s, overrides), plan


def fit_budgets(plan: Preflight, epochs_wanted: int, minutes: float, elapsed: float, baselines_s: float,
                overrides: Iterable[str] = ()) -> Fit:
    """Split the ``minutes`` target, ``elapsed`` seconds of which are spent, between pretraining and
    fine-tuning from the plan's measured steps."""
    by = {s.name: s for s in plan.stages}
    pt, ft = by["pretrain"], by["finetune"]
    # the fine-tuning report scores the test split and fits TF-IDF again (as long as the baselines stage)
    tail = TAIL_MARGIN_S + baselines_s + ft.eval_s
    left = minutes * 60 - elapsed - tail
    epoch_s = (ft.batches_per_epoch or 0) * ft.step_s + ft.eval_s
    rate = pt.tokens_per_step / pt.step_s
    fits = 1
    for epochs in range(epochs_wanted, 0, -1):  # the most epochs that leave pretraining its minimum
        if (left - epochs * epoch_s * EPOCH_SLACK) * rate >= MIN_PRETRAIN_TOKENS:
            fits = epochs
            break
    finetune_s = fits * epoch_s * EPOCH_SLACK
    pretrain_s = max(left - finetune_s, 30.0)
    user = _user_keys(overrides)
    chosen = {"pretrain.train.budget": f"{pretrain_s:.0f}", "finetune.train.budget": f"{finetune_s:.0f}",
              "finetune.epochs": str(fits)}
    items = [f"{k}={v}" for k, v in chosen.items() if k not in user]
    tokens = pretrain_s * rate
    fit = Fit(items, [
        f"quickstart fitted to this machine ({minutes:g} min target, {elapsed:.0f} s spent on data, "
        f"{tail:.0f} s kept for evaluation and export):",
        f"  pretraining {pretrain_s / 60:.1f} min in {pt.precision} -> about {tokens / 1e6:.1f}M tokens "
        f"({pt.tokens_per_step / pt.step_s:,.0f} tokens/s measured)",
        f"  fine-tuning {fits} of {epochs_wanted} epochs, {finetune_s / 60:.1f} min in {ft.precision} "
        f"({epoch_s:.0f} s an epoch measured)",
    ])
    if user & set(chosen):
        fit.lines.append(f"  kept as given: {', '.join(sorted(user & set(chosen)))}")
    if tokens < MIN_PRETRAIN_TOKENS:
        need_s = elapsed + tail + MIN_PRETRAIN_TOKENS / rate + epochs_wanted * epoch_s * EPOCH_SLACK
        need = math.ceil(need_s / 60)
        fit.too_slow = (f"this machine pretrains {rate:,.0f} tokens/s: in {minutes:g} minutes the model sees "
                        f"{tokens / 1e6:.2f}M tokens, fewer than the {MIN_PRETRAIN_TOKENS / 1e6:.0f}M below which "
                        f"the recipe measured under the TF-IDF baseline; run `lmforge quickstart --minutes {need}`")
    return fit


def _since_process_start() -> Optional[float]:
    """Seconds since this process started (Linux), so the target counts Python's start and imports too."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return None


def exported_model_dir(pipeline: PipelineConfig) -> Path:
    """Where the pipeline's last enabled export stage writes its model (RUN_DIR/<stage name>)."""
    exports = [name for name, entry in pipeline.stages.items()
               if entry.get("kind") == "export" and entry.get("enabled", True)]
    if not exports:
        raise ConfigError("--serve: the pipeline has no enabled export stage, so there is no model to serve")
    return Path(pipeline.run_dir) / exports[-1]


def _early(pipeline: PipelineConfig) -> PipelineConfig:
    stages = {name: (entry if name in EARLY_STAGES else {**entry, "enabled": False})
              for name, entry in pipeline.stages.items()}
    return pipeline.model_copy(update={"stages": stages})


def quickstart(
    minutes: Optional[float] = None,
    out: Optional[str] = None,
    device: Optional[str] = None,
    overrides: Iterable[str] = (),
    force: Iterable[str] = (),
    serve: Optional[dict[str, Any]] = None,
    preflight: bool = True,
) -> list[StageResult]:
    """Run the quickstart; with ``preflight`` (the default) its budgets are fitted to this machine. With
    ``serve`` (ServeConfig keys, e.g. {"port": 8080}; {} for the defaults: loopback, port 8000), then
    serve its exported model until interrupted."""
    from lmforge.progress import console

    started = time.perf_counter() - (_since_process_start() or 0.0)
    overrides, force = list(overrides), list(force)
    pipeline = quickstart_pipeline(minutes, out, device, overrides)
    serve_config = None
    if serve is not None:  # every --serve problem is found before minutes of training, not after
        from lmforge.serve.config import ServeConfig

        for package in ("fastapi", "uvicorn"):
            if importlib.util.find_spec(package) is None:
                raise ConfigError(f"--serve needs the {package} package: pip install 'lmforge[serve]'")
        serve_config = build_config(ServeConfig, serve, {"model": str(exported_model_dir(pipeline))}, source="--serve")
    source = str(shipped_config(QUICKSTART))
    if preflight:
        target = minutes or pipeline.minutes or 10.0
        early = run_pipeline(_early(pipeline), source=source, force=[f for f in force if f in EARLY_STAGES],
                             report=False, stdout_summary=False, preflight=False)
        baselines_s = next((r.seconds for r in early if r.name == "baselines"), 0.0)
        fit, plan = fit_to_machine(pipeline, target, time.perf_counter() - started, baselines_s, overrides)
        pipeline = quickstart_pipeline(minutes, out, device, overrides, fitted=fit.items)
        for line in [*plan.lines()[:1], *fit.lines, *([f"warning: {fit.too_slow}"] if fit.too_slow else [])]:
            console.print(line, highlight=False)
        Path(pipeline.run_dir).mkdir(parents=True, exist_ok=True)
        Path(pipeline.run_dir, "preflight.json").write_text(
            json.dumps({**plan.to_json(), "fit": fit.items, "too_slow": fit.too_slow}, indent=1) + "\n",
            encoding="utf-8")
        force = [f for f in force if f not in EARLY_STAGES]  # done above; what reads them re-runs by fingerprint
    results = run_pipeline(pipeline, source=source, force=force, preflight=False)
    console.print(f"Next: open {Path(pipeline.run_dir) / 'report.html'}; edit a copy of {shipped_config(QUICKSTART)} "
                  f"and run it with `lmforge run FILE`.")
    if serve_config is not None:
        from lmforge.serve.server import serve as serve_http

        serve_http(serve_config)
    return results
