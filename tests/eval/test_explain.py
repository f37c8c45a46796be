"""Integrated-gradient attributions: completeness, target choice, terminal and HTML output."""

from __future__ import annotations

import pytest

from lmforge.cli import main
from lmforge.eval.explain import explain
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.serve.predictor import load
from tests.finetune.conftest import ft_layers


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, base_dir, reviews_small):
    out = tmp_path_factory.mktemp("explain") / "cls"
    finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, epochs=1), source="t"))
    return out


def test_attributions_add_up_to_the_logit_difference(classifier):
    predictor = load(classifier)
    text = "这个东西质量很好，物流也快"
    coarse = explain(predictor, text, steps=4)
    fine = explain(predictor, text, steps=128)
    assert fine.delta < coarse.delta or fine.delta < 1e-4  # the integral converges
    assert fine.delta < 0.02 * max(1.0, abs(sum(fine.scores)))
    assert fine.tokens[0] == "[CLS]" and fine.scores[0] == 0.0  # special tokens stay in the baseline
    other = next(label for label in predictor.labels if label != fine.label)
    assert explain(predictor, text, target=other, steps=32).label == other


def test_cli_prints_and_writes_a_heat_map(classifier, tmp_path, capsys):
    page = tmp_path / "heat.html"
    assert main(["explain", "--model", str(classifier), "东西很好", "--html", str(page), "--steps", "8"]) == 0
    assert "<span" in page.read_text(encoding="utf-8") and "heat map" in capsys.readouterr().out
    assert main(["explain", "--model", str(classifier), "东西很好", "--target", "nope"]) == 2
    assert "unknown label 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["shap", "lime", "attention"])
def test_every_method_scores_the_tokens_classify_sees(method, classifier):
    predictor = load(classifier)
    text = "这个东西质量很好，物流也快"
    got = explain(predictor, text, method=method, samples=64)
    ig = explain(predictor, text, steps=32)
    assert got.tokens == ig.tokens and got.label == ig.label and got.method == method
    assert got.scores[0] == 0.0 or method == "attention"  # [CLS] is never removed, so it has no share
    assert any(abs(s) > 0 for s in got.scores)
    if method == "shap":  # SHAP values add up to f(x) - f(baseline) as IG's do, up to sampling
        assert got.delta < 0.05 * max(1.0, abs(sum(got.scores)))
    if method == "attention":  # mean pooling: the mean over real queries of rows that sum to 1
        assert all(s >= 0 for s in got.scores) and abs(sum(got.scores) - 1) < 1e-5


def test_attention_maps_equal_the_attention_the_model_computes(classifier):
    """Recomputed from each layer's inputs, the maps reproduce the layer's output when applied to v."""
    import torch

    from lmforge.eval.attention_maps import attention_maps

    predictor = load(classifier)
    ids = torch.tensor([predictor.classify_input("质量很好，物流也快")[0]])
    maps = attention_maps(predictor, ids, torch.ones_like(ids))  # (L, H, T, T)
    blocks = predictor.model.backbone.blocks
    assert maps.shape == (len(blocks), blocks[0].attn.n_heads, ids.shape[1], ids.shape[1])
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))
    captured = {}
    hook = blocks[0].attn.register_forward_hook(lambda m, a, out: captured.update(x=a[0], out=out))
    with torch.no_grad():
        predictor.model.backbone(ids, torch.ones_like(ids))
        hook.remove()
        x, attn = captured["x"], blocks[0].attn
        B, T, C = x.shape
        v = attn.qkv(x)[..., 2 * C:].view(B, T, attn.n_heads, -1).transpose(1, 2)  # (B, nh, T, hs)
        mixed = (maps[0][None] @ v).transpose(1, 2).reshape(B, T, C)
    torch.testing.assert_close(attn.proj(mixed), captured["out"], rtol=1e-4, atol=1e-5)


def test_the_deletion_curve_samples_across_a_split_ordered_by_label():
    from lmforge.eval.faithfulness import sample_examples

    gold = ["positive"] * 500 + ["negative"] * 500  # as the review corpus's files are ordered
    texts = [f"t{i}" for i in range(1000)]
    picked, labels = sample_examples(texts, gold, 50)
    assert len(picked) == 50 and 10 < labels.count("positive") < 40
    assert picked == sorted(picked, key=lambda t: int(t[1:]))  # file order kept
    assert sample_examples(texts, gold, 50) == (picked, labels)  # seeded


def test_deletion_curve_and_the_cli_that_compares_methods(classifier, reviews_small, tmp_path, capsys):
    import json

    from lmforge.data.examples import read_classification
    from lmforge.eval.faithfulness import deletion_curve

    predictor = load(classifier)
    texts, _, gold = read_classification(str(reviews_small), "test", "text", None)
    curve = deletion_curve(predictor, texts[:12], gold[:12], "ig", steps=8)
    assert curve.texts == 12 and len(curve.accuracy) == len(curve.fractions) == len(curve.random_accuracy)
    assert curve.accuracy[0] == curve.random_accuracy[0]  # nothing removed: the same predictions
    assert all(0 <= a <= 1 for a in curve.accuracy + curve.random_accuracy)
    assert curve.area == pytest.approx(sum(curve.accuracy) / len(curve.accuracy))
    assert main(["explain", "--model", str(classifier), "--deletion-curve", str(reviews_small), "--limit", "6",
                 "--methods", "ig", "attention", "--steps", "4", "--json"]) == 0
    printed = capsys.readouterr()
    methods = [json.loads(line)["method"] for line in printed.out.splitlines() if line.startswith("{")]
    assert methods == ["ig", "attention"] and "deletion curve" in printed.out + printed.err
    png = tmp_path / "att.png"
    assert main(["explain", "--model", str(classifier), "东西很好", "--method", "lime", "--samples", "32",
                 "--attention-png", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
