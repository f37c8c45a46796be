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


def test_a_slower_machine_fine_tunes_fewer_epochs_and_still_ends_in_time():
    fit = fit_budgets(_plan(10_000, epoch_s=110.0), 3, minutes=10, elapsed=60.0, baselines_s=20.0)
    got = _items(fit)
    assert got["finetune.epochs"] == 2  # three would leave pretraining under its minimum of tokens
    assert 60 + got["pretrain.train.budget"] + got["finetune.train.budget"] + 20 + 20 <= 600 + 1
    assert got["pretrain.train.budget"] * 10_000 >= MIN_PRETRAIN_TOKENS and fit.too_slow is None


@pytest.mark.parametrize("rate, epoch_s", [(5_400, 230.0), (1_000, 900.0)])  # the older AVX2 CPU; slower still
def test_a_machine_too_slow_for_the_recipe_is_told_the_minutes_that_would_do(rate, epoch_s):
    fit = fit_budgets(_plan(rate, epoch_s=epoch_s), 3, minutes=10, elapsed=90.0, baselines_s=30.0)
    assert fit.too_slow is not None and "lmforge quickstart --minutes" in fit.too_slow
    minutes = int(fit.too_slow.rsplit("--minutes ", 1)[1].rstrip("`"))
    assert minutes > 10
    again = fit_budgets(_plan(rate, epoch_s=epoch_s), 3, minutes=minutes, elapsed=90.0, baselines_s=30.0)
    assert again.too_slow is None and _items(again)["finetune.epochs"] == 3


def test_what_the_user_overrides_is_never_refitted():
    over = ["pretrain.train.budget=120", "stages.finetune.config.epochs=2"]
    fit = fit_budgets(_plan(35_000, 38.0), 3, minutes=10, elapsed=40.0, baselines_s=10.0, overrides=over)
    assert set(_items(fit)) == {"finetune.train.budget"}
    pipeline = quickstart_pipeline(10, "/tmp/unused", "cpu", over, fitted=fit.items)
    assert pipeline.stages["pretrain"]["config"]["train"]["budget"] == 120
    assert pipeline.stages["finetune"]["config"]["epochs"] == 2


def test_quickstart_runs_the_data_first_then_the_fitted_pipeline(tmp_path, monkeypatch):
    from lmforge.pipeline import quickstart as qs
    from lmforge.pipeline.run import StageResult

    runs = []

    def fake_run(pipeline, **kw):
        enabled = [n for n, e in pipeline.stages.items() if e.get("enabled", True)]
        runs.append((enabled, pipeline, kw))
        return [StageResult("baselines", "evaluate", "ran", 12.5, tmp_path)] if len(runs) == 1 else []

    seen = {}

    def fake_fit(pipeline, minutes, elapsed, baselines_s, overrides=()):
        seen.update(minutes=minutes, baselines_s=baselines_s, overrides=list(overrides))
        return qs.Fit(["pretrain.train.budget=321", "finetune.epochs=2"], ["fitted"]), _plan(35_000, 38.0)

    monkeypatch.setattr(qs, "run_pipeline", fake_run)
    monkeypatch.setattr(qs, "fit_to_machine", fake_fit)
    qs.quickstart(minutes=8, out=str(tmp_path / "qs"), device="cpu", overrides=["finetune.train.seed=3"],
                  force=["tokenizer", "finetune"])
    (early, _, early_kw), (_, final, final_kw) = runs
    assert early == list(qs.EARLY_STAGES) and early_kw["force"] == ["tokenizer"]
    assert final_kw["force"] == ["finetune"] and final_kw["preflight"] is False  # measured once, not twice
    assert seen == {"minutes": 8, "baselines_s": 12.5, "overrides": ["finetune.train.seed=3"]}
    assert final.stages["pretrain"]["config"]["train"]["budget"] == 321
    assert final.stages["finetune"]["config"]["epochs"] == 2 and final.stages["finetune"]["config"]["train"]["seed"] == 3
    assert (tmp_path / "qs" / "preflight.json").is_file()
