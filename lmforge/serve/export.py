"""CPU deployment formats: ONNX and its int8 form (run with onnxruntime, the `onnx` extra).

ONNX: the model's main output as one graph with dynamic batch and length axes:
    classification -> logits (B, L); tagging -> logits (B, T, L); otherwise -> hidden (B, T, C).
An ONNX directory holds model.onnx, config.json (with "onnx": {"output": ...}) and tokenizer.json.

ONNX int8: the same graph passed through onnxruntime's own dynamic quantisation (MatMul weights int8 per
output channel, activations quantised on the fly; `"onnx": {..., "quantization": "int8-dynamic"}`). It
measured the fastest CPU path (docs/serving.md: 2.58x fp32 eager at batch 1, 2.37x at batch 32), where
torch's quantised Linear still paid Python dispatch per layer at batch 1 (1.24x).

int8 (`--to int8`) is that ONNX int8 graph. It used to be torch's eager dynamic quantisation
(`torch.ao.quantization.quantize_dynamic`, applied when loading an fp32 directory marked
`"quantization": "int8-dynamic"`), which torch deprecates with no replacement inside torch (the
successor, torchao, is a separate package): slower, and on its way out. A directory of that old kind
still loads, as the fp32 model it holds.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from lmforge.config import ConfigError
from lmforge.model.heads import TaskModel
from lmforge.model.peft import merge_lora
from lmforge.model.modeldir import LoadedModel, atomic_directory, load_model_dir, read_json
from lmforge.serve import EXPORT_TARGETS

INT8 = "int8-dynamic"
ONNX_PACKAGES = ("onnx", "onnxruntime")
ONNX_TARGETS = ("onnx", "onnx-int8", "int8")  # the export targets written by onnx + onnxruntime


def missing_onnx_package() -> Optional[str]:
    """The first package of the `onnx` extra that is not installed, or None."""
    import importlib.util

    return next((p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None), None)


def export_int8(model_dir: str | Path, out: str | Path) -> Path:
    """`lmforge export --to int8`: the ONNX Runtime int8 graph (see the module docstring)."""
    return export_onnx(model_dir, out, quantize=True)


class _Graph(nn.Module):
    """The traced function: (input_ids, attention_mask) -> the model's main output."""

    def __init__(self, model: TaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        m = self.model
        if m.task is not None:
            return m.task_logits(input_ids, attention_mask)  # (B, L) or (B, T, L)
        return m.backbone(input_ids, attention_mask)  # (B, T, C)


def onnx_output(model: TaskModel) -> str:
    return "logits" if model.task else "hidden"


def export_onnx(model_dir: str | Path, out: str | Path, quantize: bool = False) -> Path:
    """`lmforge export --to onnx` (or `onnx-int8` with `quantize`): model.onnx + config.json + tokenizer.json."""
    package = missing_onnx_package()
    if package:
        raise ConfigError(f"ONNX and int8 export need the {package} package: pip install 'lmforge[onnx]'")
    src = Path(model_dir)
    loaded = load_model_dir(src)
    model = loaded.model.eval()
    config = dict(loaded.config)
    if model.method in ("lora", "adalora"):  # the same function with no extra matmuls
        merge_lora(model)
        config.update(method="full", settings={}, merged_from=model.method)
    if model.config.positions != "learned":
        raise ConfigError("cannot export to ONNX: rotary positions are not supported by this exporter")
    ids = torch.randint(5, model.config.vocab_size, (2, 8))
    attn = torch.ones_like(ids)
    attn[1, 6:] = 0  # a padded row so the traced graph keeps the masking path
    tmp = Path(tempfile.mkdtemp(prefix=".onnx-"))
    try:
        with torch.no_grad():
            torch.onnx.export(_Graph(model), (ids, attn), str(tmp / "model.onnx"), dynamo=False,
                              input_names=["input_ids", "attention_mask"], output_names=[onnx_output(model)],
                              dynamic_axes={"input_ids": {0: "batch", 1: "length"},
                                            "attention_mask": {0: "batch", 1: "length"}}, opset_version=17)
        onnx_info: dict[str, Any] = {"output": onnx_output(model), "opset": 17}
        graph = tmp / "model.onnx"
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            graph = tmp / "model-int8.onnx"
            # u8 weights (U8U8), not s8: the file is served on CPUs other than this one, and on one without
            # VNNI ONNX Runtime's U8S8 kernel sums int8 products in saturating int16 (vpmaddubsw). The
            # tests' classifier drifted by 0.075 in probability that way on a CI machine against 0.009 with
            # VNNI (CPU capability AVX512); U8U8 has no saturation anywhere (0.010 with VNNI, and about
            # 16% slower there).
            quantize_dynamic(str(tmp / "model.onnx"), str(graph), weight_type=QuantType.QUInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])  # the Linear layers; embeddings stay fp32
            onnx_info["quantization"] = INT8
        config["onnx"] = onnx_info
        return _write_dir(src, Path(out), config, {"model.onnx": graph})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_model(model_dir: str | Path, to: str, out: str | Path) -> Path:
    """`lmforge export --to TARGET` (TARGET one of EXPORT_TARGETS), for the CLI and the pipeline stage."""
    from lmforge.model.hf import export_hf

    targets = {"hf": export_hf, "onnx": export_onnx, "onnx-int8": export_int8, "int8": export_int8}
    assert set(targets) == set(EXPORT_TARGETS)
    if to not in targets:
        raise ConfigError(f"export: unknown target {to!r}; expected one of {', '.join(EXPORT_TARGETS)}")
    return targets[to](model_dir, out)


def _write_dir(src: Path, out: Path, config: dict[str, Any], files: dict[str, Path]) -> Path:
    with atomic_directory(out) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=1, ensure_ascii=False), encoding="utf-8")
        for name, path in files.items():
            shutil.copyfile(path, tmp / name)
        if (src / "tokenizer.json").is_file():
            shutil.copyfile(src / "tokenizer.json", tmp / "tokenizer.json")
    return out


class OnnxModel:
    """Stands in for TaskModel inside a Predictor: the same calls, answered by onnxruntime."""

    def __init__(self, path: Path, config: dict[str, Any], threads: Optional[int] = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("ONNX inference needs onnxruntime: pip install 'lmforge[onnx]'") from None
        from lmforge.model.modeldir import build_model, current_config

        options = ort.SessionOptions()
        # idle ORT threads busy-wait by default, stealing the cores torch and the server need
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = threads or torch.get_num_threads()  # the same budget as torch
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        shape = build_model(current_config(config), str(path.parent / "config.json"))  # structure: which tasks exist
        self.config, self.heads, self.task, self.problem = shape.config, (), shape.task, shape.problem
        self.mlm = self.lm = None
        self.output = config["onnx"]["output"]

    def eval(self) -> "OnnxModel":
        return self

    def _run(self, ids: Tensor, attn: Optional[Tensor]) -> Tensor:
        attn = attn if attn is not None else torch.ones_like(ids)
        (out,) = self.session.run(None, {"input_ids": ids.numpy(), "attention_mask": attn.numpy()})
        return torch.from_numpy(out)

    classify = tag = backbone = _run  # (B, L), (B, T, L), (B, T, C): whatever the graph was exported for


def load_deployed(path: Path, config: dict[str, Any]) -> LoadedModel:
    """An ONNX (fp32 or int8) directory -> LoadedModel with an onnxruntime stand-in; an old torch-int8
    directory -> its fp32 model."""
    from lmforge.tokenize.tokenizer import load_tokenizer

    if "onnx" in config:
        tok = load_tokenizer(path / "tokenizer.json") if (path / "tokenizer.json").is_file() else None
        return LoadedModel(OnnxModel(path / "model.onnx", config), tok, config,  # type: ignore[arg-type]
                           list(config.get("labels", [])))
    warnings.warn(f"{path}: an int8 directory of the old kind (fp32 weights, quantised by torch.ao.quantization "
                  f"when loaded, which torch deprecates): serving its fp32 model; re-export it with "
                  f"`lmforge export --to int8` for the ONNX Runtime int8 graph", UserWarning, stacklevel=2)
    return load_model_dir(path)


def is_deployed(path: Path) -> Optional[dict[str, Any]]:
    """config.json of an int8/ONNX directory, else None."""
    cfg = read_json(path / "config.json") if (path / "config.json").is_file() else {}
    return cfg if ("onnx" in cfg or cfg.get("quantization") == INT8) else None
