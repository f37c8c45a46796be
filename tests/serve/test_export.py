"""int8 (ONNX Runtime dynamic quantisation) and ONNX Runtime: same answers as fp32 within tolerance."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

import lmforge
from lmforge.config import ConfigError
from lmforge.serve.export import export_int8, export_model, export_onnx
from tests.serve.conftest import review_texts


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return review_texts(48)


def _probs(p, texts) -> torch.Tensor:
    return torch.tensor([[r["scores"][lab] for lab in p.labels] for r in p.classify(texts)])


def test_int8_is_the_onnx_runtime_int8_graph_without_deprecated_torch_apis(serve_models, texts, tmp_path):
    pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed")
    import onnx

    fp32 = lmforge.load(serve_models["classifier"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = export_int8(serve_models["classifier"], tmp_path / "int8")
        int8 = lmforge.load(out)
        b = _probs(int8, texts)
    assert not [w for w in caught if "torch.ao.quantization" in str(w.message) or "quantized tensor" in str(w.message)]
    assert json.loads((out / "config.json").read_text())["onnx"]["quantization"] == "int8-dynamic"
    ops = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}  # really int8 matmuls
    assert type(int8.model).__name__ == "OnnxModel"
    a = _probs(fp32, texts)
    assert 0 < (a - b).abs().max() < 0.05  # int8 weights: small, bounded drift
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9


def test_an_int8_directory_of_the_old_torch_kind_loads_as_the_fp32_model_it_holds(serve_models, texts, tmp_path):
    old = tmp_path / "old-int8"
    shutil.copytree(serve_models["classifier"], old)
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**config, "quantization": "int8-dynamic"}))
    with pytest.warns(UserWarning, match="re-export it with `lmforge export --to int8`"):
        loaded = lmforge.load(old)
    torch.testing.assert_close(_probs(loaded, texts), _probs(lmforge.load(serve_models["classifier"]), texts))


@pytest.mark.parametrize("kind", ["classifier", "tagger"])
def test_onnx_runtime_matches_fp32(kind, serve_models, texts, tmp_path):
    pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed")
    fp32 = lmforge.load(serve_models[kind], batch_size=16)
    onnx = lmforge.load(export_onnx(serve_models[kind], tmp_path / "onnx"), batch_size=16)
    assert type(onnx.model).__name__ == "OnnxModel"
    if kind == "classifier":
        torch.testing.assert_close(_probs(onnx, texts), _probs(fp32, texts), rtol=0, atol=1e-4)
        assert onnx.tasks == ("classify",)
    else:
        ours, theirs = fp32.tag(texts[:10]), onnx.tag(texts[:10])
        assert [[w["label"] for w in s] for s in ours] == [[w["label"] for w in s] for s in theirs]
        assert all(abs(x["score"] - y["score"]) < 1e-4 for s, t in zip(ours, theirs) for x, y in zip(s, t))


def test_onnx_int8_quantises_the_matmuls_and_stays_close(serve_models, texts, tmp_path):
    pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed")
    import onnx

    fp32 = lmforge.load(serve_models["classifier"])
    out = export_model(serve_models["classifier"], "onnx-int8", tmp_path / "q")
    ops = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"} and "DynamicQuantizeLinear" in ops  # really int8
    q = lmforge.load(out)
    a, b = _probs(fp32, texts), _probs(q, texts)
    assert 0 < (a - b).abs().max() < 0.05  # quantised (not bit-equal), with a small bounded drift
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9


def test_export_model_names_unknown_targets(serve_models, tmp_path):
    with pytest.raises(ConfigError, match="unknown target 'tflite'"):
        export_model(serve_models["classifier"], "tflite", tmp_path / "x")
