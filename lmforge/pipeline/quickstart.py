"""`lmforge quickstart`: the shipped quickstart pipeline (lmforge/configs/quickstart.yaml), run as is."""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional

from lmforge.config import ConfigError, build_config
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


def exported_model_dir(pipeline: PipelineConfig) -> Path:
    """Where the pipeline's last enabled export stage writes its model (RUN_DIR/<stage name>)."""
    exports = [name for name, entry in pipeline.stages.items()
               if entry.get("kind") == "export" and entry.get("enabled", True)]
    if not exports:
        raise ConfigError("--serve: the pipeline has no enabled export stage, so there is no model to serve")
    return Path(pipeline.run_dir) / exports[-1]


def quickstart(
    minutes: Optional[float] = None,
    out: Optional[str] = None,
    device: Optional[str] = None,
    overrides: Iterable[str] = (),
    force: Iterable[str] = (),
    serve: Optional[dict[str, Any]] = None,
) -> list[StageResult]:
    """Run the quickstart pipeline; with ``serve`` (ServeConfig keys, e.g. {"port": 8080}; {} for the
    defaults: loopback, port 8000), then serve its exported model until interrupted."""
    pipeline = quickstart_pipeline(minutes, out, device, overrides)
    serve_config = None
    if serve is not None:  # every --serve problem is found before minutes of training, not after
        from lmforge.serve.config import ServeConfig

        for package in ("fastapi", "uvicorn"):
            if importlib.util.find_spec(package) is None:
                raise ConfigError(f"--serve needs the {package} package: pip install 'lmforge[serve]'")
        serve_config = build_config(ServeConfig, serve, {"model": str(exported_model_dir(pipeline))}, source="--serve")
    results = run_pipeline(pipeline, source=str(shipped_config(QUICKSTART)), force=force)
    from lmforge.progress import console

    console.print(f"Next: open {Path(pipeline.run_dir) / 'report.html'}; edit a copy of {shipped_config(QUICKSTART)} "
                  f"and run it with `lmforge run FILE`.")
    if serve_config is not None:
        from lmforge.serve.server import serve as serve_http

        serve_http(serve_config)
    return results
