"""The quickstart fitted to the machine: how the measured steps split the time target."""

import pytest

from lmforge.pipeline.preflight import MachinePlan, Preflight, StagePlan
from lmforge.pipeline.quickstart import MIN_PRETRAIN_TOKENS, fit_budgets, quickstart_pipeline


def _plan(pretrain_tokens_per_s: float, epoch_s: float) -> Preflight:
    """A measured plan: pretraining at a token rate; fine-tuning epochs of 800 batches taking epoch_s."""
    machine = MachinePlan("CPU", "AVX2", False, 2, {2: 9.0, 1: 5.0})
    pt = StagePlan("pretrain", "pretrain", "fp32", "auto", 2048 / pretrain_tokens_per_s, 2048, 0, 0.0, "budget", 800_000)
    ft = StagePlan("finetune", "finetune", "fp32", "auto", epoch_s / 880, 600, 0, 0.0, "epochs", 800_000,
                   batches_per_epoch=800, eval_s=epoch_s * 80 / 880)
    return Preflight(machine, [pt, ft])


def _items(fit) -> dict[str, float]:
    return {k: float(v) for k, v in (i.split("=") for i in fit.items)}


def test_a_fast_machine_keeps_every_epoch_and_pretrains_with_the_rest():
    fit = fit_budgets(_plan(35_000, epoch_s=38.0), 3, minutes=10, elapsed=40.0, baselines_s=10.0)
    got = _items(fit)
    assert got["finetune.epochs"] == 3 and got["finetune.train.budget"] == pytest.approx(3 * 38 * 1.05, abs=1)
    assert got["pretrain.train.budget"] + got["finetune.train.budget"] < 600 - 40 - 10  # room for the tail
    assert got["pretrain.train.budget"] > 380 and fit.too_slow is None


def test_a_slow_machine_fine_tunes_fewer_epochs_and_still_ends_in_time():
    fit = fit_budgets(_plan(5_400, epoch_s=230.0), 3, minutes=10, elapsed=60.0, baselines_s=20.0)
    got = _items(fit)
    assert got["finetune.epochs"] == 1
    assert 60 + got["pretrain.train.budget"] + got["finetune.train.budget"] + 20 + 20 <= 600 + 1
    tokens = got["pretrain.train.budget"] * 5_400
    assert tokens > MIN_PRETRAIN_TOKENS and fit.too_slow is None


def test_a_machine_too_slow_for_the_recipe_is_told_the_minutes_that_would_do():
    fit = fit_budgets(_plan(1_000, epoch_s=900.0), 3, minutes=10, elapsed=90.0, baselines_s=30.0)
    assert fit.too_slow is not None and "lmforge quickstart --minutes" in fit.too_slow
    minutes = int(fit.too_slow.rsplit("--minutes ", 1)[1].rstrip("`"))
    assert minutes > 10
    again = fit_budgets(_plan(1_000, epoch_s=900.0), 3, minutes=minutes, elapsed=90.0, baselines_s=30.0)
    assert again.too_slow is None


def test_what_the_user_overrides_is_never_refitted():
    over = ["pretrain.train.budget=120", "stages.finetune.config.epochs=2"]
    fit = fit_budgets(_plan(35_000, 38.0), 3, minutes=10, elapsed=40.0, baselines_s=10.0, overrides=over)
    assert set(_items(fit)) == {"finetune.train.budget"}
    pipeline = quickstart_pipeline(10, "/tmp/unused", "cpu", over, fitted=fit.items)
    assert pipeline.stages["pretrain"]["config"]["train"]["budget"] == 120
    assert pipeline.stages["finetune"]["config"]["epochs"] == 2
