"""The one training loop, for pretraining and fine-tuning alike.

Everything task-specific is the ``objective``: ``(model, batch) -> ObjectiveOutput(loss_sum, n_tokens,
metrics)``. One optimizer step is: for each micro-batch, forward + backward of the *summed* loss; then
divide the gradients by the number of loss tokens of the whole step (all micro-batches, all processes),
so accumulating 4 x 8 sequences equals one batch of 32 and padding never weights a step; then clip,
check for non-finite values, and update.

``train_loop`` sets the run up and drives three parts that own their cadence: ``TrainStep`` (one
optimizer step), ``CheckpointKeeper`` (resumable checkpoints every ``checkpoint_every`` steps, at a new
best and at the end) and ``ThroughputMeter`` (a metrics line every ``log_every`` steps); validation is
``evaluate``, whose metrics the objective declares (``ObjectiveOutput.reports``).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lmforge.config import ConfigError
from lmforge.errors import TrainingError  # defined apart so the CLI can catch it without importing torch
from lmforge.model.heads import transformer_blocks
from lmforge.train import checkpoint as ckpt
from lmforge.train.config import TrainConfig
from lmforge.train.distributed import DistInfo, all_gather_tensor, all_reduce_sum, barrier, wrap_model
from lmforge.train.fsdp import ShardedTraining, local_shards
from lmforge.train.hardware import (PrecisionChoice, autocast_context, choice_record, choose_threads,
                                    measure_peak_flops, resolve_precision)
from lmforge.train.objectives import Objective
from lmforge.train.optim import Schedule, build_optimizer
from lmforge.train.track import MFUMeter, Tracker


_MAX_OVERFLOWS = 40  # halvings from GradScaler's 2**16 to below 1e-7: past that it is no overflow


class BatchSource(Protocol):
    def __iter__(self) -> Iterator[dict[str, Tensor]]: ...
    def set_epoch(self, epoch: int) -> None: ...  # a new epoch from its start; the current one: unchanged
    def rewind(self) -> None: ...  # epoch 0, batch 0
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class LoopResult:
    step: int
    stopped: str  # "steps", "budget", "stop_at_step", "early_stopping"
    losses: dict[int, float] = field(default_factory=dict)  # step -> global mean train loss
    evals: list[dict[str, float]] = field(default_factory=list)
    bad_steps: int = 0
    best: Optional[tuple[int, float]] = None  # (step, value) of the early-stopping metric


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in backward instead of storing them (memory for compute).
    Replaces ``forward`` on the instances, so parameter names and checkpoints are unchanged."""
    blocks = transformer_blocks(model)
    if blocks is None:
        raise ValueError("activation checkpointing needs a model with backbone.blocks")
    for block in blocks:
        block.forward = lambda *a, _f=block.forward, **k: checkpoint(_f, *a, use_reentrant=False, **k)


def scale_and_clip_(grads: list[Tensor], factor: float, clip_norm: Optional[float],
                    shards_of: Optional[DistInfo] = None) -> float:
    """Multiply ``grads`` by ``factor`` and clip their total norm to ``clip_norm``, in one pass over
    them (scaling, then clip_grad_norm_, reads and writes every gradient twice: the embedding table
    alone is 47 MB in a BERT-sized model). Returns the norm after scaling, before clipping.
    ``shards_of``: the grads are this rank's shards (FSDP); the squared norms are summed over ranks."""
    if shards_of is not None:
        squares = torch.stack(torch._foreach_norm(grads)).square().sum() if grads else torch.zeros(())
        norm = math.sqrt(float(all_reduce_sum(squares.double(), shards_of))) * factor
    elif not grads:
        return 0.0
    else:
        norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))) * factor
    coef = factor * (min(1.0, clip_norm / (norm + 1e-6)) if clip_norm else 1.0)  # clip_grad_norm_'s rule
    torch._foreach_mul_(grads, coef)
    return norm


def _to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def evaluate(
    model: nn.Module,
    objective: Objective,
    data: BatchSource,
    cfg: TrainConfig,
    device: torch.device,
    info: DistInfo,
) -> dict[str, float]:
    """Validation loss, perplexity and accuracy metrics; the same masks at every evaluation (seeded
    RNG fork, so training's random stream is untouched)."""
    model.eval()
    sums: dict[str, Tensor] = {}
    reports: dict[str, tuple[str, str]] = {}
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed + 7919 * (info.rank + 1))
        # always the same first batches (set_epoch(0) alone keeps the position of an epoch under way,
        # as resuming needs, so a partial pass would move the next evaluation on)
        data.rewind()
        for i, batch in enumerate(data):
            if cfg.eval_batches is not None and i >= cfg.eval_batches:
                break
            with autocast_context(cfg.precision, device):
                out = objective(model, _to_device(batch, device))
            reports.update(out.reports)
            for key, value in {"loss_sum": out.loss_sum, "n_tokens": out.n_tokens, **out.metrics}.items():
                sums[key] = (
                    sums.get(key, torch.zeros((), device=device, dtype=torch.float64)) + value.double()
                )
    model.train()
    if not sums:
        raise TrainingError("validation data yields no batches")
    keys = sorted(sums)
    totals = all_reduce_sum(torch.stack([sums[k] for k in keys]), info)
    s = dict(zip(keys, totals.tolist()))
    n = max(s["n_tokens"], 1.0)
    result = {"val_loss": s["loss_sum"] / n, "val_ppl": math.exp(min(s["loss_sum"] / n, 50.0))}
    for name, (numerator, denominator) in sorted(reports.items()):  # what the objective declares
        result[f"val_{name}"] = s.get(numerator, 0.0) / max(s.get(denominator, 0.0), 1.0)
    return result


def train_loop(
    model: nn.Module,
    objective: Objective,
    train_data: BatchSource,
    cfg: TrainConfig,
    *,
    device: torch.device,
    eval_data: Optional[BatchSource] = None,
    eval_objective: Optional[Objective] = None,
    out_dir: Optional[Path] = None,
    resume: Optional[Path] = None,
    info: DistInfo = DistInfo(),
    flops_per_token: Optional[float] = None,
    after_step: Optional[Callable[[int], None]] = None,
    precision: Optional[PrecisionChoice] = None,
    label: str = "train",
) -> LoopResult:
    """Train ``model`` in place; checkpoints and metrics go under ``out_dir`` (rank 0 only).
    ``after_step(step)`` runs after each update while the gradients are still there (AdaLoRA's
    rank reallocation). ``precision``: the stage's resolved ``train.precision`` (resolved here when
    not given); ``label`` names the progress bar."""
    choice = precision or resolve_precision(cfg.precision, device)
    started_with = ckpt.read_state(resume).get("precision") if resume is not None else None
    if started_with and choice.requested == "auto" and started_with != choice.precision:
        # an exact resume computes in the precision the run started with, wherever it resumes
        choice = replace(choice, precision=started_with, reason=f"auto: the precision run {resume} started with")
    writer = info.is_main and out_dir is not None
    if choice.warning and writer:
        from lmforge.progress import console

        console.print(f"warning: {choice.warning}")
    cfg = cfg.model_copy(update={"precision": choice.precision})
    threads_before = torch.get_num_threads()
    try:
        return _train(model, objective, train_data, cfg, choice, device=device, eval_data=eval_data,
                      eval_objective=eval_objective, out_dir=out_dir, resume=resume, info=info,
                      flops_per_token=flops_per_token, after_step=after_step, label=label)
    finally:
        torch.set_num_threads(threads_before)  # train.threads is this run's, not the process's


class CheckpointKeeper:
    """Saves resumable checkpoints (rank 0 writes; every rank's RNG stream goes in) at its cadence
    (``train.checkpoint_every``), for a new best evaluation, and at the end; never twice for a step."""

    def __init__(self, root: Optional[Path], cfg: TrainConfig, info: DistInfo, writer: bool, base: nn.Module,
                 optimizer: torch.optim.Optimizer, scaler: Any, train_data: BatchSource, state: dict[str, Any],
                 resumed: bool, sharding: Optional[ShardedTraining] = None) -> None:
        self.root, self.cfg, self.info, self.writer = root, cfg, info, writer
        self.base, self.optimizer, self.scaler, self.train_data, self.state = base, optimizer, scaler, train_data, state
        self.sharding = sharding  # FSDP: the full state is gathered (all ranks) for rank 0 to write
        self.saved_at: list[int] = [state["step"]] if resumed else []

    def _full_state(self) -> contextlib.AbstractContextManager[tuple[nn.Module, Any]]:
        if self.sharding is not None:
            return self.sharding.full_state(self.optimizer)
        return contextlib.nullcontext((self.base, self.optimizer))

    def save(self, step: int, best: Optional[tuple[str, float]] = None) -> None:
        rng = all_gather_tensor(torch.get_rng_state(), self.info) if self.info.enabled else []  # every rank's stream
        if self.root is not None and self.saved_at[-1:] != [step]:
            with self._full_state() as (model, optimizer):
                if self.writer:
                    full = {
                        **self.state,
                        "data": self.train_data.state_dict(),
                        "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                    }
                    extra = {f"extra.rng.rank{r}": t for r, t in enumerate(rng) if r}
                    ckpt.save_checkpoint(self.root, step, model, optimizer, full, extra_tensors=extra)
        if self.writer and self.root is not None:
            if best is not None:
                ckpt.mark_best(self.root, step, *best)
            ckpt.prune(self.root, self.cfg.keep_last)
        self.saved_at.append(step)
        barrier(self.info)

    def after_step(self, step: int) -> None:
        if self.cfg.checkpoint_every and step % self.cfg.checkpoint_every == 0:
            self.save(step)

    def at_end(self, step: int) -> None:
        """The end of every run (or stage of one) is resumable."""
        if self.root is not None and self.saved_at[-1:] != [step]:
            self.save(step)


class ThroughputMeter:
    """Mean train loss, tokens/s and MFU over the steps since the last log line, written every
    ``train.log_every`` steps."""

    def __init__(self, cfg: TrainConfig, mfu: MFUMeter, tracker: Tracker) -> None:
        self.cfg, self.mfu, self.tracker = cfg, mfu, tracker
        self._reset(time.perf_counter())

    def _reset(self, now: float) -> None:
        self.loss, self.steps, self.tokens, self.t0 = 0.0, 0, 0.0, now

    def after_step(self, step: int, loss: float, tokens: float, lr: float, grad_norm: float,
                   state: dict[str, Any]) -> None:
        self.loss += loss
        self.steps += 1
        self.tokens += tokens
        if step % self.cfg.log_every:
            return
        now = time.perf_counter()
        rate = self.tokens / max(now - self.t0, 1e-9)
        metrics = {"train_loss": self.loss / self.steps, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": rate,
                   "tokens": state["tokens"], "bad_steps": state["bad_steps"], "elapsed_s": state["elapsed"]}
        utilisation = self.mfu(rate)
        if utilisation is not None:
            metrics["mfu"] = utilisation
        self.tracker.log(step, metrics)
        self._reset(now)


@dataclass
class StepOutcome:
    kind: str  # "update", "overflow" (fp16: retried with the next batch) or "non_finite" (skipped)
    loss: float  # global mean loss per token of the step
    grad_norm: float
    tokens: float  # attention-mask tokens of the step, all processes


class TrainStep:
    """One optimizer step: forward + backward of the summed loss for each micro-batch, the global
    per-token mean of the gradients (all micro-batches, all processes), clipping, the fp16 loss scale,
    and the update, or no update when the loss or the gradients are not finite."""

    def __init__(self, model: nn.Module, no_sync: Callable[[], Any], trained: nn.Module, objective: Objective,
                 optimizer: torch.optim.Optimizer, scaler: Any, cfg: TrainConfig, device: torch.device,
                 info: DistInfo, sharded: bool = False) -> None:
        # model: what is called (compiled or not); no_sync: the DDP/FSDP context that keeps a micro-batch's
        # gradients local; trained: whose gradients (sharded ones under FSDP: ``sharded``)
        self.model, self.no_sync, self.objective, self.optimizer, self.scaler = model, no_sync, objective, optimizer, scaler
        self.cfg, self.device, self.info, self.sharded = cfg, device, info, sharded
        self.params = [p for p in trained.parameters() if p.requires_grad]
        self.overflows = 0  # consecutive fp16 overflow retries

    def __call__(self, batches: Iterator[dict[str, Tensor]]) -> StepOutcome:
        cfg, device, info, scaler = self.cfg, self.device, self.info, self.scaler
        loss_sum = torch.zeros((), device=device)
        n_tokens = torch.zeros((), device=device)
        seen = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum):
            batch = _to_device(next(batches), device)
            sync = micro == cfg.grad_accum - 1 or not info.enabled
            with contextlib.nullcontext() if sync else self.no_sync():
                with autocast_context(cfg.precision, device):
                    out = self.objective(self.model, batch)
                (scaler.scale(out.loss_sum) if scaler is not None else out.loss_sum).backward()
            loss_sum += out.loss_sum.detach().float()
            n_tokens += out.n_tokens
            seen += batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel()
        totals = all_reduce_sum(torch.stack([loss_sum, n_tokens, seen]), info)
        n_global = float(totals[1].clamp(min=1))
        step_loss = float(totals[0]) / n_global
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        # DDP averaged the per-process gradient sums over world_size; make it a per-token mean
        grads = [p.grad for p in self.params if p.grad is not None]
        grad_norm = scale_and_clip_(local_shards(grads) if self.sharded else grads, info.world_size / n_global,
                                    cfg.clip_norm, shards_of=info if self.sharded else None)
        tokens = float(totals[2])
        if (scaler is not None and math.isfinite(step_loss) and not math.isfinite(grad_norm)
                and self.overflows < _MAX_OVERFLOWS):
            # fp16 overflow: the loss scale was too high. GradScaler skips the update and halves the
            # scale; the step is retried with the next batch and neither counts nor moves the schedule
            scaler.step(self.optimizer)
            scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.overflows += 1
            return StepOutcome("overflow", step_loss, grad_norm, tokens)
        self.overflows = 0
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.update()
            return StepOutcome("non_finite", step_loss, grad_norm, tokens)
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        return StepOutcome("update", step_loss, grad_norm, tokens)


def _train(
    model: nn.Module,
    objective: Objective,
    train_data: BatchSource,
    cfg: TrainConfig,
    choice: PrecisionChoice,
    *,
    device: torch.device,
    eval_data: Optional[BatchSource],
    eval_objective: Optional[Objective],
    out_dir: Optional[Path],
    resume: Optional[Path],
    info: DistInfo,
    flops_per_token: Optional[float],
    after_step: Optional[Callable[[int], None]],
    label: str,
) -> LoopResult:
    writer = info.is_main and out_dir is not None
    model.to(device)
    base = model
    n_layers = getattr(getattr(base, "config", None), "n_layers", 0)
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None

    state: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "elapsed": 0.0,
        "bad_steps": 0,
        "tokens": 0,
        "best": None,
        "evals_since_best": 0,
        "precision": cfg.precision,
    }
    extra: dict[str, Tensor] = {}
    sharding = None
    if cfg.parallel == "fsdp" and info.enabled:
        if after_step is not None:
            raise ConfigError("train.parallel=fsdp: not with a method that edits the model between steps "
                              "(AdaLoRA's rank reallocation); use train.parallel=ddp")
        if cfg.compile:
            raise ConfigError("train.parallel=fsdp: not with train.compile; use one or the other")
        if resume is not None:  # the weights before sharding copies them; the optimizer's state once it is built
            state, extra = ckpt.load_checkpoint(resume, base)
        sharding = ShardedTraining(base, info, cfg.precision,
                                   apply_activation_checkpointing if cfg.activation_checkpointing else None)
    trained = sharding.module if sharding is not None else base  # whose parameters the optimizer steps
    optimizer = build_optimizer(trained, cfg.optim, n_layers, device)
    schedule = Schedule(optimizer, cfg.schedule, cfg.optim.lr, cfg.steps, cfg.budget)
    if resume is not None:
        if sharding is None:
            state, extra = ckpt.load_checkpoint(resume, base, optimizer)
        else:
            sharding.load_optimizer_state(optimizer, ckpt.load_optimizer_state(resume))
        train_data.load_state_dict(state["data"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if info.rank:  # the checkpoint holds every rank's torch RNG: each continues its own stream
            rank_rng = extra.get(f"extra.rng.rank{info.rank}")
            if rank_rng is None:
                raise TrainingError(f"{resume}: no RNG state for rank {info.rank}; it was written by a run "
                                    f"of fewer processes, so it cannot resume exactly with {info.world_size}")
            torch.set_rng_state(rank_rng)
    else:
        train_data.set_epoch(0)
    _set_threads(cfg, device, info, state)
    if sharding is not None:
        model, no_sync = sharding.module, sharding.no_sync
    else:
        if cfg.activation_checkpointing:
            apply_activation_checkpointing(base)
        model = wrap_model(base, info, device)
        no_sync = getattr(model, "no_sync", contextlib.nullcontext)
    if cfg.compile:
        model = torch.compile(model, backend="inductor" if cfg.compile is True else cfg.compile)
    peak = cfg.peak_flops
    if peak is None and writer and flops_per_token:
        peak = measure_peak_flops(device, cfg.precision)  # RNG-free: a resumed run draws what a fresh one does

    result = LoopResult(step=state["step"], stopped="steps", bad_steps=state["bad_steps"])
    if state["best"] is not None:
        result.best = tuple(state["best"])  # type: ignore[assignment]
    batches = _batch_stream(train_data, state)
    start_time = time.perf_counter() - state["elapsed"]
    train_step = TrainStep(model, no_sync, trained, objective, optimizer, scaler, cfg, device, info,
                           sharded=sharding is not None)
    keeper = CheckpointKeeper(out_dir / "checkpoints" if out_dir is not None else None, cfg, info, writer, base,
                              optimizer, scaler, train_data, state, resumed=resume is not None, sharding=sharding)
    tracker = Tracker(out_dir, writer, cfg.steps, trackers=cfg.trackers, progress=cfg.progress, wandb=cfg.wandb,
                      budget=cfg.budget, label=label)
    meter = ThroughputMeter(cfg, MFUMeter(flops_per_token, peak, info.world_size), tracker)

    def evaluate_now() -> bool:
        """Evaluate the current weights, log, keep the best; True when early stopping says stop."""
        assert eval_data is not None
        return _eval_and_track(model, eval_objective or objective, eval_data, cfg, device, info, state, result,
                               tracker, keeper.save)

    with tracker:
        tracker.message(f"{label}: {choice.line()}; {torch.get_num_threads()} threads" if device.type == "cpu"
                        else f"{label}: {choice.line()}")
        parallel = ({"parallel": "fsdp", "param_share": round(sharding.local_share(), 4)} if sharding is not None
                    else {"parallel": "ddp"} if info.enabled else {})
        tracker.event(state["step"], {**choice_record(choice), "threads": torch.get_num_threads(), **parallel})
        tracker.advance(state["step"], state["elapsed"])
        while True:
            step = state["step"]
            elapsed = _agreed_elapsed(time.perf_counter() - start_time, info, device)
            if step >= cfg.steps or (cfg.budget is not None and schedule.done(step, elapsed)):
                result.stopped = "steps" if step >= cfg.steps else "budget"
                break
            if cfg.stop_at_step is not None and step >= cfg.stop_at_step:
                result.stopped = "stop_at_step"
                break
            lr = schedule.apply(step, elapsed)
            where = dict(train_data.state_dict())  # names the batch if this step goes wrong
            outcome = train_step(batches)
            if outcome.kind == "overflow":
                continue
            if outcome.kind == "non_finite":
                state["bad_steps"] += 1
                result.bad_steps = state["bad_steps"]
                text = (
                    f"step {step + 1}: non-finite {'gradient' if math.isfinite(outcome.loss) else 'loss'} "
                    f"(loss={outcome.loss}, grad_norm={outcome.grad_norm}) "
                    f"in the batch(es) read from data state {where}; "
                    f"step skipped ({state['bad_steps']} of at most {cfg.max_bad_steps})"
                )
                tracker.message(text)
                if state["bad_steps"] >= cfg.max_bad_steps:
                    raise TrainingError(text + "; stopping: too many non-finite steps")
                continue
            if after_step is not None:
                after_step(step + 1)
            optimizer.zero_grad(set_to_none=True)
            state["step"] = step = step + 1
            state["tokens"] += int(outcome.tokens)
            state["elapsed"] = time.perf_counter() - start_time
            result.step, result.losses[step] = step, outcome.loss
            tracker.advance(step, state["elapsed"], outcome.loss)
            meter.after_step(step, outcome.loss, outcome.tokens, lr, outcome.grad_norm, state)

            stop_early = False
            if eval_data is not None and cfg.eval_every and step % cfg.eval_every == 0:
                stop_early = evaluate_now()
            keeper.after_step(step)
            if stop_early:
                result.stopped = "early_stopping"
                break
        evaluated = result.evals[-1]["step"] if result.evals else None
        if (eval_data is not None and cfg.eval_every and result.stopped in ("steps", "budget")
                and state["step"] > 0 and evaluated != state["step"]):
            # the final weights are scored too: a budget usually ends between evaluations, and with the
            # LR decayed to zero there the last weights are often the best ones
            evaluate_now()
        keeper.at_end(state["step"])
    if sharding is not None:
        sharding.finish()  # the caller's module holds the trained weights again, on every rank
    return result


def _set_threads(cfg: TrainConfig, device: torch.device, info: DistInfo, state: dict[str, Any]) -> None:
    """``train.threads``: a count, or auto (the count measured fastest now, one process on CPU only:
    under torchrun each process keeps the count it was given). A resumed run keeps the count it started
    with, since a matmul split over another number of threads can round differently."""
    if device.type != "cpu":
        return
    if state.get("threads"):
        torch.set_num_threads(int(state["threads"]))
    elif cfg.threads != "auto":
        torch.set_num_threads(int(cfg.threads))
    elif not info.enabled:
        torch.set_num_threads(choose_threads()[0])
    state["threads"] = torch.get_num_threads()


def _agreed_elapsed(elapsed: float, info: DistInfo, device: torch.device) -> float:
    """All processes must see the same clock: a time-keyed LR or budget stop that differed between
    ranks would let their weights drift apart or leave one waiting forever in an all-reduce."""
    if not info.enabled:
        return elapsed
    return (
        float(all_reduce_sum(torch.tensor(elapsed, device=device, dtype=torch.float64), info))
        / info.world_size
    )


def _batch_stream(data: BatchSource, state: dict[str, Any]) -> Iterator[dict[str, Tensor]]:
    """Batches forever, epoch after epoch; ``state['epoch']`` follows so checkpoints can record it.
    (A pass may be empty once: a run resumed exactly at the end of an epoch; twice means no data.)"""
    empty_passes = 0
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
        empty_passes = empty_passes + 1 if empty else 0
        if empty_passes >= 2:
            raise TrainingError("training data yields no batches (fewer sequences than one batch?)")
        state["epoch"] += 1
        data.set_epoch(state["epoch"])


def _eval_and_track(
    model: nn.Module,
    objective: Objective,
    data: BatchSource,
    cfg: TrainConfig,
    device: torch.device,
    info: DistInfo,
    state: dict[str, Any],
    result: LoopResult,
    tracker: Tracker,
    save: Any,
) -> bool:
    """Evaluate, log, keep the best checkpoint; True when early stopping says stop."""
    step = state["step"]
    metrics = evaluate(model, objective, data, cfg, device, info)
    result.evals.append({"step": step, **metrics})
    tracker.log(step, metrics)
    es = cfg.early_stopping
    if es.metric not in metrics:
        raise TrainingError(
            f"train.early_stopping.metric={es.metric!r} is not logged; have {sorted(metrics)}"
        )
    value = metrics[es.metric]
    best = state["best"]
    improved = best is None or (
        value < best[1] - es.min_delta if es.mode == "min" else value > best[1] + es.min_delta
    )
    if improved:
        state["best"], state["evals_since_best"] = [step, value], 0
        result.best = (step, value)
        save(step, best=(es.metric, value))
    else:
        state["evals_since_best"] += 1
    return es.patience is not None and state["evals_since_best"] >= es.patience
