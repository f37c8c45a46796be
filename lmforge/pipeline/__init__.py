"""`lmforge run PIPELINE.yaml`: stages in order, outputs feeding the next, complete stages skipped.

    from lmforge.pipeline import load_pipeline, run_pipeline
    run_pipeline(load_pipeline("configs/quickstart.yaml", ["pretrain.train.budget=2m"]))

New stage kinds (finetune, export...) plug in with ``lmforge.pipeline.registry.register``.
"""

from lmforge.pipeline.config import PipelineConfig, load_pipeline
from lmforge.pipeline.plan import plan_pipeline
from lmforge.pipeline.registry import StageKind, StageReport, register
from lmforge.pipeline.run import run_pipeline, scale_budgets

__all__ = [
    "PipelineConfig",
    "StageKind",
    "StageReport",
    "load_pipeline",
    "plan_pipeline",
    "register",
    "run_pipeline",
    "scale_budgets",
]
