import pytest
import torch

from lmforge.config import ConfigError, build_config
from lmforge.train.config import OptimConfig, ScheduleConfig, TrainConfig, parse_duration
from lmforge.train.optim import Lamb, Schedule, build_optimizer, layer_index, lr_factor, param_groups
from tests.train.helpers import tiny_model


def test_no_weight_decay_on_biases_and_norms():
    model = tiny_model(100)
    groups = param_groups(model, OptimConfig(weight_decay=0.1), 2)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            name = names[id(p)]
            expect = 0.0 if (name.endswith("bias") or "norm" in name) else 0.1
            assert g["weight_decay"] == expect, name
    n_tied_once = sum(len(g["params"]) for g in groups)
    assert n_tied_once == len({id(p) for p in model.parameters()})


def test_layer_wise_lr_decay():
    assert layer_index("backbone.embed.tokens.weight", 2) == 0
    assert layer_index("backbone.blocks.1.attn.qkv.weight", 2) == 2
    assert layer_index("mlm.transform.weight", 2) == 3
    model = tiny_model(100)
    groups = param_groups(model, OptimConfig(lr=1.0, layer_decay=0.5), 2)
    names = {id(p): n for n, p in model.named_parameters()}
    lr_of = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    assert lr_of["backbone.embed.positions.weight"] == 0.125
    assert lr_of["backbone.blocks.0.mlp.fc.weight"] == 0.25
    assert lr_of["backbone.blocks.1.mlp.fc.weight"] == 0.5
    assert lr_of["mlm.transform.weight"] == 1.0


@pytest.mark.parametrize("name", ["adamw", "adafactor", "lamb", "sgd"])
def test_every_optimizer_reduces_a_loss(name):
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 1))
    lr = {"adamw": 1e-2, "adafactor": 1e-2, "lamb": 1e-2, "sgd": 5e-2}[name]
    opt = build_optimizer(
        model, OptimConfig(name=name, lr=lr, nesterov=name == "sgd"), 0, torch.device("cpu")
    )
    first = None
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first


def test_adamw_is_fused_where_available():
    opt = build_optimizer(torch.nn.Linear(2, 2), OptimConfig(), 0, torch.device("cpu"))
    assert opt.defaults["fused"] is True


def test_lamb_trust_ratio_scales_the_step():
    """LAMB's first step moves each tensor by lr * ||w|| (Adam's first direction is +-1 everywhere)."""
    w = torch.nn.Parameter(torch.full((4,), 2.0))
    opt = Lamb([w], lr=0.1, eps=1e-12)
    w.grad = torch.tensor([1.0, -1.0, 1.0, -1.0])
    opt.step()
    torch.testing.assert_close((w.detach() - 2.0).norm(), torch.tensor(0.1 * 4.0), rtol=1e-4, atol=1e-6)


def test_schedule_shapes():
    lin = ScheduleConfig(kind="linear", warmup=0.1)
    assert lr_factor(lin, 0.05, 0.1) == pytest.approx(0.5)
    assert lr_factor(lin, 0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(lin, 0.55, 0.1) == pytest.approx(0.5)
    assert lr_factor(lin, 1.0, 0.1) == pytest.approx(0.0)
    cos = ScheduleConfig(kind="cosine", warmup=0.0, min_lr_ratio=0.1)
    assert lr_factor(cos, 0.5, 0.0) == pytest.approx(0.55) and lr_factor(cos, 1.0, 0.0) == pytest.approx(0.1)
    assert lr_factor(ScheduleConfig(kind="constant"), 0.9, 0.0) == 1.0
    wsd = ScheduleConfig(kind="wsd", warmup=0.1, decay_fraction=0.2)
    assert lr_factor(wsd, 0.5, 0.1) == 1.0 and lr_factor(wsd, 0.9, 0.1) == pytest.approx(0.5)
    one = ScheduleConfig(kind="onecycle", warmup=0.3)
    assert lr_factor(one, 0.0, 0.3) == pytest.approx(0.04) and lr_factor(one, 0.3, 0.3) == pytest.approx(1.0)
    assert lr_factor(one, 1.0, 0.3) < 1e-3


def test_schedule_follows_steps_or_wall_clock():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    by_steps = Schedule(opt, ScheduleConfig(kind="linear", warmup=0.0), 2.0, steps=100)
    assert by_steps.apply(50, elapsed_s=9999) == pytest.approx(1.0)
    by_time = Schedule(opt, ScheduleConfig(kind="linear", warmup=0.0), 2.0, steps=100, budget_s=60)
    assert by_time.apply(1, elapsed_s=45) == pytest.approx(0.5) and opt.param_groups[0][
        "lr"
    ] == pytest.approx(0.5)
    assert by_time.done(1, 60) and not by_time.done(99, 59)
    warm = Schedule(opt, ScheduleConfig(kind="constant", warmup_steps=10), 1.0, steps=100)
    assert warm.apply(5, 0) == pytest.approx(0.5)


def test_budget_parsing():
    assert parse_duration("30m") == 1800 and parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    assert parse_duration("45") == 45 and parse_duration(12) == 12
    assert build_config(TrainConfig, {"budget": "2m"}).budget == 120
    with pytest.raises(ConfigError, match="budget"):
        build_config(TrainConfig, {"budget": "soon"})


def test_time_budget_stops_the_loop(corpus):
    from tests.train.helpers import run, train_cfg

    result = run(corpus, None, train_cfg(steps=100_000, budget="1s", schedule={"kind": "cosine"}))
    assert result.stopped == "budget" and 0 < result.step < 100_000
