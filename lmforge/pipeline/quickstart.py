"""`lmforge quickstart`: the shipped quickstart pipeline (lmforge/configs/quickstart.yaml), run as is."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Iterable, Optional

from lmforge.pipeline.config import PipelineConfig, load_pipeline
from lmforge.pipeline.run import StageResult, run_pipeline, scale_budgets

__all__ = ["QUICKSTART", "quickstart", "quickstart_pipeline"]

QUICKSTART = "quickstart.yaml"


def shipped_config(name: str) -> Path:
    """A pipeline file shipped inside the package (found the same in a checkout and an install)."""
    return Path(str(resources.files("lmforge") / "configs" / name))


def quickstart_pipeline(
    minutes: Optional[float] = None,
    out: Optional[str] = None,
    device: Optional[str] = None,
    overrides: Iterable[str] = (),
) -> PipelineConfig:
    """The quickstart pipeline with budgets scaled to ``minutes`` and training on ``device``."""
    items = list(overrides)
    pipeline = load_pipeline(shipped_config(QUICKSTART), [], run_dir=out)
    if device is not None:
        trains = [n for n, e in pipeline.stages.items() if isinstance((e.get("config") or {}).get("train"), dict)]
        items = [f"{name}.train.device={device}" for name in trains] + items  # pretrain, finetune...
    pipeline = load_pipeline(shipped_config(QUICKSTART), items, run_dir=out)
    if minutes is not None:
        pipeline = scale_budgets(pipeline, minutes / (pipeline.minutes or 10.0))
    return pipeline


def quickstart(
    minutes: Optional[float] = None,
    out: Optional[str] = None,
    device: Optional[str] = None,
    overrides: Iterable[str] = (),
    force: Iterable[str] = (),
    preflight: bool = True,
) -> list[StageResult]:
    pipeline = quickstart_pipeline(minutes, out, device, overrides)
    results = run_pipeline(pipeline, source=str(shipped_config(QUICKSTART)), force=force, preflight=preflight)
    from lmforge.progress import console

    console.print(f"Next: open {Path(pipeline.run_dir) / 'report.html'}; edit a copy of {shipped_config(QUICKSTART)} "
                  f"and run it with `lmforge run FILE`.")
    return results
