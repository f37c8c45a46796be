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
