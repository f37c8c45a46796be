"""Deployment: int8 and ONNX exports, the Predictor, the HTTP server. Light to import (no torch here)."""

from typing import Literal, get_args

ExportTarget = Literal["hf", "onnx", "onnx-int8", "int8"]  # `lmforge export --to`, the pipeline's export stage
EXPORT_TARGETS: tuple[str, ...] = get_args(ExportTarget)
