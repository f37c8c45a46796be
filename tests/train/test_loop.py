import json

import pytest
import torch

from lmforge.config import ConfigError

from lmforge.train.checkpoint import latest_checkpoint
from lmforge.train.data import TensorBlockSource
from lmforge.train.loop import TrainingError, scale_and_clip_, train_loop
from lmforge.train.objectives import ObjectiveOutput, causal_lm_objective
from tests.train.helpers import ListSource, padded_batches, run, tiny_model, train_cfg


def test_loss_falls_on_a_tiny_corpus(corpus, tmp_path, device):
    cfg = train_cfg(steps=60, eval_every=30, eval_batches=4, log_every=10, optim={"lr": 5e-3})
    result = run(corpus, tmp_path, cfg, eval_data=True, dropout=0.0, device=device)
    first = sum(result.losses[s] for s in range(1, 6)) / 5
    last = sum(result.losses[s] for s in range(56, 61)) / 5
    assert last < first - 0.4, (first, last)
    assert result.evals[-1]["val_loss"] < result.evals[0]["val_loss"]
    assert 0.01 < result.evals[-1]["val_mlm_acc"] < 1  # frequent tokens get learnt first
    assert result.evals[-1]["val_ppl"] == pytest.approx(
        torch.tensor(result.evals[-1]["val_loss"]).exp().item()
    )


def test_accumulating_4x8_equals_one_batch_of_32(corpus, device):
    results = []
    for rows, accum in ((32, 1), (8, 4)):
        model = tiny_model(len(corpus.vocab), causal=True, dropout=0.0, attn_dropout=0.0)
        cfg = train_cfg(
            steps=3,
            batch_size=rows,
            grad_accum=accum,
            optim={"name": "sgd", "lr": 1.0},  # SGD: Adam is blind to a wrongly scaled gradient
            schedule={"kind": "constant", "warmup": 0.0},
        )
        res = train_loop(
            model,
            causal_lm_objective,
            ListSource(padded_batches(corpus, 96, rows)),
            cfg,
            device=device,
        )
        results.append((res, model))
    (a, ma), (b, mb) = results
    for s in (1, 2, 3):
        assert a.losses[s] == pytest.approx(b.losses[s], rel=1e-5)
    for (name, pa), pb in zip(ma.named_parameters(), mb.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)


def test_bf16_autocast(corpus, device):
    result = run(corpus, None, train_cfg(steps=3, precision="bf16"), device=device)
    assert all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())


def test_fp16_trains_with_loss_scaling_on_cuda_and_is_refused_elsewhere(corpus, tmp_path, device):
    if device.type != "cuda":
        with pytest.raises(ConfigError, match="fp16 with loss scaling needs a CUDA device"):
            run(corpus, None, train_cfg(steps=1, precision="fp16"), device=device)
        return
    result = run(corpus, tmp_path, train_cfg(steps=8, precision="fp16"), device=device)
    assert result.step == 8 and all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())
    state = json.loads((latest_checkpoint(tmp_path / "checkpoints") / "state.json").read_text())
    assert 0 < state["state"]["scaler"]["scale"] <= 2.0**16  # GradScaler("cuda") ran and was saved


def test_activation_checkpointing_same_result(corpus, device):
    plain = run(corpus, None, train_cfg(steps=3), dropout=0.0, device=device)
    ckpt = run(corpus, None, train_cfg(steps=3, activation_checkpointing=True), dropout=0.0, device=device)
    for s in (1, 2, 3):
        assert plain.losses[s] == pytest.approx(ckpt.losses[s], rel=1e-5)


class Poisoned:
    """Wraps an objective: its ``bad_call``-th call returns a NaN loss or NaN gradients."""

    def __init__(self, inner, bad_call, kind="loss"):
        self.inner, self.bad_call, self.kind, self.calls = inner, bad_call, kind, 0

    def __call__(self, model, batch):
        self.calls += 1
        out = self.inner(model, batch)
        if self.calls == self.bad_call:
            if self.kind == "loss":
                return ObjectiveOutput(out.loss_sum * float("nan"), out.n_tokens, out.metrics)
            p = next(model.parameters())
            p.register_hook(lambda g: torch.full_like(g, float("nan")) if self.calls == self.bad_call else g)
        return out


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_non_finite_step_is_skipped_and_weights_unchanged(corpus, kind, device):
    model = tiny_model(len(corpus.vocab), causal=True, dropout=0.0, attn_dropout=0.0)
    data = TensorBlockSource(corpus.tokens[:20_000], 16, 8)
    snapshots = {}

    class Watch:
        def __init__(self):
            self.inner = Poisoned(causal_lm_objective, 3, kind)

        def __call__(self, m, batch):
            snapshots[self.inner.calls + 1] = [p.detach().clone() for p in m.parameters()]
            return self.inner(m, batch)

    watch = Watch()
    res = train_loop(model, watch, data, train_cfg(steps=4, max_bad_steps=3), device=device)
    assert (
        res.bad_steps == 1 and res.step == 4 and watch.inner.calls == 5
    )  # one extra batch replaced the bad one
    for before, after in zip(snapshots[3], snapshots[4]):  # weights entering call 3 == entering call 4
        assert torch.equal(before, after)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_too_many_bad_steps_stop_with_a_clear_message(corpus):
    model = tiny_model(len(corpus.vocab), causal=True)
    data = TensorBlockSource(corpus.tokens[:20_000], 16, 8)
    with pytest.raises(TrainingError, match=r"step 3: non-finite loss .*data state .*'position': 2"):
        train_loop(
            model,
            Poisoned(causal_lm_objective, 3),
            data,
            train_cfg(steps=5, max_bad_steps=1),
            device=torch.device("cpu"),
        )


def test_exact_resume_after_stopping_mid_run(corpus, tmp_path):
    """Dropout, dynamic masks, evals and checkpoints in between: the resumed losses are bitwise equal."""
    cfg = dict(steps=8, eval_every=2, eval_batches=2, checkpoint_every=3)
    full = run(corpus, tmp_path / "a", train_cfg(**cfg), eval_data=True)
    first = run(corpus, tmp_path / "b", train_cfg(**cfg, stop_at_step=5), eval_data=True)
    assert first.stopped == "stop_at_step" and max(first.losses) == 5
    ck = latest_checkpoint(tmp_path / "b" / "checkpoints")
    assert ck.name == "step-00000005"
    rest = run(corpus, tmp_path / "b", train_cfg(**cfg), resume=ck, eval_data=True, init_seed=123)
    assert sorted(rest.losses) == [6, 7, 8]
    for s in range(1, 9):
        assert (first.losses | rest.losses)[s] == full.losses[s], s  # bitwise
    assert [e["val_loss"] for e in full.evals] == [e["val_loss"] for e in first.evals + rest.evals]


def test_early_stopping_keeps_the_best_checkpoint(corpus, tmp_path):
    # val_loss falls, so asking for its maximum stops after `patience` evaluations without a new best
    cfg = train_cfg(
        steps=20,
        eval_every=2,
        eval_batches=2,
        keep_last=1,
        early_stopping={"metric": "val_loss", "mode": "max", "patience": 2},
    )
    res = run(corpus, tmp_path, cfg, eval_data=True, dropout=0.0)
    assert res.stopped == "early_stopping" and res.step == 6 and res.best[0] == 2
    root = tmp_path / "checkpoints"
    assert json.loads((root / "best.json").read_text())["step"] == 2
    assert sorted(p.name for p in root.glob("step-*")) == ["step-00000002", "step-00000006"]


def test_the_final_weights_are_evaluated_and_can_be_the_best(corpus, tmp_path):
    """A run that ends between evaluations (steps or budget) scores its last weights as well."""
    cfg = train_cfg(steps=5, eval_every=2, eval_batches=2,
                    early_stopping={"metric": "val_loss", "mode": "min", "patience": 5})
    res = run(corpus, tmp_path, cfg, eval_data=True, dropout=0.0)
    assert [e["step"] for e in res.evals] == [2, 4, 5]
    assert res.best[0] == 5  # the loss still falls on this tiny corpus at step 5
    assert json.loads((tmp_path / "checkpoints" / "best.json").read_text())["step"] == 5


def test_compiled_model_trains_like_the_eager_one_and_checkpoints_plain_names(corpus, tmp_path):
    """train.compile goes through torch.compile (aot_eager here: the same graph capture and autograd
    tracing as inductor, without the minutes of kernel generation); losses match eager and the
    checkpoint holds the plain module's names."""
    from safetensors.torch import load_file

    eager = run(corpus, tmp_path / "eager", train_cfg(steps=3, checkpoint_every=3), dropout=0.0)
    compiled = run(corpus, tmp_path / "compiled", train_cfg(steps=3, checkpoint_every=3, compile="aot_eager"),
                   dropout=0.0)
    assert all(abs(eager.losses[s] - compiled.losses[s]) < 1e-4 for s in eager.losses)
    names = set(load_file(str(tmp_path / "compiled" / "checkpoints" / "step-00000003" / "model.safetensors")))
    assert names == set(load_file(str(tmp_path / "eager" / "checkpoints" / "step-00000003" / "model.safetensors")))
    assert not any("_orig_mod" in n for n in names)


def test_metrics_jsonl_and_tensorboard(corpus, tmp_path):
    run(corpus, tmp_path, train_cfg(steps=4, log_every=2, tensorboard=True))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 2, 4]  # step 0: the precision and threads the run chose
    assert lines[0]["event"] == "precision" and lines[0]["precision"] == "fp32"
    for key in ("train_loss", "lr", "grad_norm", "tokens_per_s", "mfu", "bad_steps"):
        assert key in lines[-1]
    assert lines[-1]["tokens"] == 4 * 8 * 16 and 0 < lines[-1]["mfu"] < 1
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_epochs_roll_over_and_empty_data_is_an_error(corpus):
    model = tiny_model(len(corpus.vocab), causal=True)
    data = TensorBlockSource(corpus.tokens[: 16 * 16], 16, 8)  # 2 batches per epoch
    res = train_loop(model, causal_lm_objective, data, train_cfg(steps=5), device=torch.device("cpu"))
    assert res.step == 5 and data.epoch == 2 and data.position == 1
    with pytest.raises(TrainingError, match="yields no batches"):
        train_loop(model, causal_lm_objective, ListSource([]), train_cfg(steps=1), device=torch.device("cpu"))


@pytest.mark.parametrize("clip", [None, 1.0, 1e3])
def test_scale_and_clip_is_scaling_then_clip_grad_norm(clip):
    torch.manual_seed(0)
    grads = [torch.randn(50, 8) * 3, torch.randn(8), torch.randn(3, 3, 3)]
    reference = [g.clone() * 0.25 for g in grads]
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in reference]
    for p, g in zip(params, reference):
        p.grad = g
    expected = float(torch.nn.utils.clip_grad_norm_(params, clip or float("inf")))
    norm = scale_and_clip_(grads, 0.25, clip)
    assert norm == pytest.approx(expected, rel=1e-5)
    for g, p in zip(grads, params):
        torch.testing.assert_close(g, p.grad)


def test_validation_reports_what_the_objective_declares(corpus, device):
    """The loop names no metric: an objective's ``reports`` become val_<name> (here: a count of the
    tokens predicted as the most frequent token, a metric the loop has never heard of)."""

    def objective(model, batch):
        out = causal_lm_objective(model, batch)
        top = torch.zeros((), dtype=torch.long) + out.n_tokens // 2  # half of the tokens, whatever the batch
        return ObjectiveOutput(out.loss_sum, out.n_tokens, {**out.metrics, "half": top},
                               {**out.reports, "half_share": ("half", "n_tokens")})

    model = tiny_model(len(corpus.vocab), causal=True, dropout=0.0, attn_dropout=0.0)
    data = TensorBlockSource(corpus.tokens[:20_000], 16, 8)
    val = TensorBlockSource(corpus.tokens[20_000:24_000], 16, 8, shuffle=False)
    res = train_loop(model, objective, data, train_cfg(steps=2, eval_every=2, eval_batches=2), device=device,
                     eval_data=val)
    last = res.evals[-1]
    assert 0.45 <= last["val_half_share"] <= 0.5 and 0 <= last["val_lm_acc"] <= 1
    assert not [k for k in last if k.startswith("val_") and k not in
                ("val_loss", "val_ppl", "val_lm_acc", "val_half_share")]
