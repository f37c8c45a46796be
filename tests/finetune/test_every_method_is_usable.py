"""Every fine-tuning method's output is a model directory that every lmforge command uses, and they
agree: `lmforge.load`, `lmforge predict`, a real HTTP request to `lmforge serve`'s app, `explain`,
`export --to onnx|int8` and (where a native transformers class computes the model) `export --to hf`
loaded by transformers.
The report's score is what the predictor (and so the server) answers on the test split."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

import lmforge
from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.eval.explain import explain
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.model.hf import export_hf
from lmforge.serve.config import ServeConfig
from lmforge.serve.export import export_model
from lmforge.serve.server import create_app
from tests.finetune.conftest import ft_layers
from tests.serve.server_utils import running

CASES = {  # name -> (base fixture, fine-tuning overrides, exports to Hugging Face)
    "full": ("base_dir", {}, True),
    "lora-merged": ("base_dir", {"method": "lora", "lora": {"merge": True}}, True),
    "lora": ("base_dir", {"method": "lora", "lora": {"embedding_rank": 2}}, True),
    "adalora": ("base_dir", {"method": "adalora", "lora": {"rank": 4}, "adalora": {"target_rank": 2}}, True),
    "adapter": ("base_dir", {"method": "adapter"}, False),
    "prefix": ("base_dir", {"method": "prefix", "prefix": {"length": 4}}, False),
    "decoder": ("decoder_base_dir", {}, True),  # GPT2ForSequenceClassification
    # prompt-based: the MLM head at the template's [MASK] (no transformers class reads a class that way)
    "prompt": ("base_dir", {"prompt": {"template": "{text}总之很[MASK]。", "verbalizer": {"positive": "好", "negative": "差"}}}, False),
    "prompt-lora": ("base_dir", {"method": "lora", "prompt": {"template": "[MASK]评:{text}",
                                                              "verbalizer": {"positive": "好", "negative": "差"}}}, False),
}


def _test_split(data):
    rows = [json.loads(line) for line in open(data / "test.jsonl", encoding="utf-8")]
    return [r["text"] for r in rows], [r["label"] for r in rows]


@pytest.mark.parametrize("case", list(CASES))
def test_every_method_loads_predicts_serves_explains_and_exports(case, request, tmp_path, reviews_small, capsys):
    base_name, overrides, to_hf = CASES[case]
    out = tmp_path / case
    result = finetune(make_finetune_config(*ft_layers(out, request.getfixturevalue(base_name), reviews_small,
                                                      epochs=1), overrides, source="t"))
    predictor = lmforge.load(out)
    assert predictor.tasks[0] == "classify"
    if case not in ("full", "lora-merged", "decoder", "prompt"):  # the method's own layers are rebuilt, not merged away
        assert predictor.model.method == overrides["method"]

    texts, gold = _test_split(reviews_small)
    answers = predictor.classify(texts)
    row = next(r for r in result["report"]["rows"] if r["kind"] == "model")
    served_accuracy = sum(a["label"] == g for a, g in zip(answers, gold)) / len(gold)
    assert row["metrics"]["accuracy"] == pytest.approx(served_accuracy, abs=1e-12)  # the report is what is served

    sample = texts[:4]
    assert main(["predict", "--model", str(out), "--json", *sample[:2]]) == 0
    printed = [json.loads(line)["classify"] for line in capsys.readouterr().out.splitlines()]
    assert [p["label"] for p in printed] == [a["label"] for a in answers[:2]]

    with running(create_app(predictor, ServeConfig(model=str(out)))) as url:
        reply = httpx.post(f"{url}/v1/classify", json={"texts": sample}, timeout=30)
    assert reply.status_code == 200
    for got, want in zip(reply.json()["results"], answers):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=1e-5)

    for method in ("ig", "shap", "attention"):  # gradients, perturbations and attention maps, every method
        attribution = explain(predictor, sample[0], steps=8, method=method, samples=32)
        assert attribution.label == answers[0]["label"] and len(attribution.scores) == len(attribution.tokens)
        assert attribution.probability == pytest.approx(answers[0]["score"], abs=1e-5)

    if predictor.model.config.positions == "learned":
        onnx = lmforge.load(export_model(out, "onnx", tmp_path / "onnx")).classify(sample)
        int8 = lmforge.load(export_model(out, "int8", tmp_path / "int8")).classify(sample)
        for a, b, c in zip(answers, onnx, int8):
            assert b["label"] == a["label"] and b["score"] == pytest.approx(a["score"], abs=1e-4)
            assert c["score"] == pytest.approx(a["scores"][c["label"]], abs=0.05)

    if not to_hf:
        with pytest.raises(ConfigError, match="cannot export to Hugging Face: .*") as refused:
            export_hf(out, tmp_path / "hf")
        assert "\n" not in str(refused.value) and not (tmp_path / "hf").exists()
        return
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(export_hf(out, tmp_path / "hf")).eval()
    ids = torch.tensor([predictor.tokenizer.encode(sample[0]).ids])
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        ours = predictor.model.classify(ids, torch.ones_like(ids))
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
