"""The pre-flight plan: measure this machine and each training stage's real step, then predict the run.

`lmforge plan FILE` (a pipeline or one pretrain/finetune config) and the start of every `lmforge run`
and `lmforge quickstart` print it before any stage works. Per training stage it runs a few real
optimizer steps of the configured model at its batch size and sequence length, in the precision and
thread count the stage will choose, and predicts steps, tokens, epochs and peak memory within its
budget; it warns where a plan cannot reach its aim and says what to change.

Predictions are for this machine as loaded now: a pre-flight on a shared machine measures the share
it has. Fine-tuning's step is measured at ``data.max_length`` (dynamic padding makes real batches
shorter), so its step time is an upper bound when the prepared data is not there yet.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import Tensor

from lmforge.train.config import TrainConfig
from lmforge.train.hardware import PrecisionChoice, choose_threads, cpu_has_native_bf16, resolve_precision

__all__ = ["MachinePlan", "Preflight", "StagePlan", "measure_machine", "measure_step", "preflight"]

# Chinchilla (Hoffmann et al. 2022): about 20 training tokens per parameter for a compute-optimal run;
# far fewer leaves a pretrained model mostly untrained, whatever the schedule
TOKENS_PER_PARAM_AIM = 20.0
_STARTUP_S = 3.0  # a training stage's own start (model build, data reading) before its budget's clock


@dataclass
class MachinePlan:
    device: str
    capability: str
    native_bf16: bool
    threads: int
    thread_gflops: dict[int, float]


@dataclass
class StagePlan:
    name: str
    kind: str  # "pretrain" | "finetune"
    precision: str
    precision_reason: str
    step_s: float  # measured seconds per optimizer step
    tokens_per_step: int  # positions fed per step (an upper bound for fine-tuning)
    steps: int  # predicted optimizer steps
    seconds: float  # predicted wall clock of the training stage
    limited_by: str  # "budget", "steps" or "epochs"
    params: int  # parameters without the embedding tables
    epochs: Optional[float] = None
    peak_memory_mib: Optional[float] = None
    batches_per_epoch: Optional[int] = None  # fine-tuning on prepared data
    eval_s: float = 0.0  # one validation pass
    warnings: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.steps * self.tokens_per_step


@dataclass
class Preflight:
    machine: MachinePlan
    stages: list[StagePlan]

    @property
    def training_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def warnings(self) -> list[str]:
        return [f"{s.name}: {w}" for s in self.stages for w in s.warnings]

    def lines(self) -> list[str]:
        m = self.machine
        rates = ", ".join(f"{n} threads {r:,.0f}" for n, r in m.thread_gflops.items())
        out = [f"pre-flight: {m.device}, CPU capability {m.capability}, native bf16 {'yes' if m.native_bf16 else 'no'}, "
               f"{m.threads} threads (fp32 GFLOP/s: {rates})"]
        for s in self.stages:
            epochs = f", {s.epochs:.2f} epochs" if s.epochs is not None else ""
            memory = f", peak memory {s.peak_memory_mib:,.0f} MiB" if s.peak_memory_mib is not None else ""
            out.append(f"  {s.name} ({s.kind}): {s.precision} ({s.precision_reason}); {s.step_s * 1000:,.0f} ms/step "
                       f"-> {s.steps:,} steps, {s.tokens / 1e6:,.2f}M tokens{epochs} in {s.seconds / 60:.1f} min "
                       f"(ends by {s.limited_by}){memory}")
        out.append(f"  training stages: {self.training_seconds / 60:.1f} min predicted "
                   "(data, tokenizer, evaluation and export stages come on top)")
        out += [f"  warning: {w}" for w in self.warnings]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine.__dict__,
                "stages": [{**s.__dict__, "tokens": s.tokens} for s in self.stages],
                "training_seconds": self.training_seconds, "warnings": self.warnings}


def measure_machine(device: torch.device) -> MachinePlan:
    threads, rates = (torch.get_num_threads(), {}) if device.type != "cpu" else choose_threads()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
    return MachinePlan(name, torch.backends.cpu.get_cpu_capability(), bool(native), threads,
                       {n: round(r, 1) for n, r in rates.items()})


class _Cycle:
    """The given batches, round and round: a step's cost follows their shapes, not their token ids."""

    def __init__(self, batches: list[dict[str, Tensor]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        while True:
            yield from self.batches

    def set_epoch(self, epoch: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class _Enough(Exception):
    """Raised from the loop's after-step hook once enough steps are timed."""


def _peak_rss_reset() -> bool:
    try:  # Linux: writing 5 to clear_refs resets the peak resident size (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> Optional[float]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure_step(
    model: torch.nn.Module,
    objective: Any,
    batches: list[dict[str, Tensor]],
    train: TrainConfig,
    device: torch.device,
    precision: PrecisionChoice,
    threads: int,
    seconds: float = 2.0,
    min_steps: int = 3,
    warmup: int = 2,
) -> tuple[float, Optional[float]]:
    """(mean seconds per optimizer step, peak memory MiB) of ``train_loop`` on ``batches``: warmup
    steps first (first-touch allocation, kernel choice), then timed ones until ``seconds`` have passed
    and at least ``min_steps`` ran. The global RNG is restored afterwards."""
    from lmforge.train.loop import train_loop

    stamps: list[float] = []

    def after_step(step: int) -> None:
        stamps.append(time.perf_counter())
        timed = len(stamps) - warmup
        if timed >= min_steps and stamps[-1] - stamps[warmup - 1] >= seconds:
            raise _Enough

    cfg = train.model_copy(update={"steps": 10**6, "budget": None, "stop_at_step": None, "progress": False,
                                   "tensorboard": False, "eval_every": None, "checkpoint_every": None,
                                   "threads": threads, "peak_flops": 1.0, "log_every": 10**6})
    rss = device.type == "cpu" and _peak_rss_reset()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            train_loop(model, objective, _Cycle(batches), cfg, device=device, precision=precision,
                       after_step=after_step)
        except _Enough:
            pass
    timed = stamps[warmup - 1:]
    memory = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
              else _peak_rss_mib() if rss else None)
    # the mean, not the median: a budget pays for the slow steps too
    return (timed[-1] - timed[0]) / (len(timed) - 1), memory


def _predict(train: TrainConfig, step_s: float, needed_steps: Optional[int]) -> tuple[int, float, str]:
    """(steps, seconds, what ends the stage) for a stage whose step takes ``step_s``."""
    cap, limited = train.steps, "steps"
    if needed_steps is not None and needed_steps < cap:
        cap, limited = needed_steps, "epochs"
    if train.budget is not None:
        in_budget = max(int(train.budget / step_s), 0)
        if in_budget < cap:
            return in_budget, train.budget + _STARTUP_S, "budget"
    return cap, cap * step_s + _STARTUP_S, limited


def _non_embedding_params(model: torch.nn.Module) -> int:
    from lmforge.model.transformer import count_parameters

    return count_parameters(model, exclude_embeddings=True)


def _plan_pretrain(name: str, config: Any, vocab_size: int, device: torch.device, threads: int,
                   shard_tokens: Optional[int]) -> StagePlan:
    from lmforge.model.heads import LanguageModel
    from lmforge.train.pretrain import HEADS, build_objective

    model_cfg = config.model.model_copy(update={"vocab_size": vocab_size})
    config = config.model_copy(update={"model": model_cfg})
    precision = resolve_precision(config.train.precision, device)
    gen = torch.Generator().manual_seed(0)
    batch_size, seq = config.train.batch_size, config.data.seq_len
    ids = torch.randint(5, vocab_size, (batch_size, seq), generator=gen)
    ids[:, 0] = 2
    meta = {"tokenizer": {"special_tokens": {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}}}
    kind = config.objective.kind
    objective = build_objective(config.model_copy(update={"objective": config.objective.model_copy(
        update={"whole_word": False})}), meta, None)
    batch: dict[str, Tensor] = {"input_ids": ids}
    if kind in ("mlm+nsp", "mlm+sop"):
        batch["sentence_label"] = torch.randint(0, 2, (batch_size,), generator=gen)
        batch["token_type_ids"] = torch.zeros_like(ids)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LanguageModel(model_cfg, HEADS[kind])
    # one optimizer step: grad_accum micro-batches (measure_step times whole optimizer steps)
    step_s, memory = measure_step(model, objective, [batch], config.train, device, precision, threads)
    tokens_per_step = batch_size * seq * config.train.grad_accum
    steps, seconds, limited = _predict(config.train, step_s, None)
    params = _non_embedding_params(model)
    plan = StagePlan(name, "pretrain", precision.precision, precision.reason, step_s, tokens_per_step, steps,
                     seconds, limited, params, peak_memory_mib=memory)
    if shard_tokens:
        plan.epochs = plan.tokens / shard_tokens
    per_param = plan.tokens / max(params, 1)
    if per_param < TOKENS_PER_PARAM_AIM:
        need = TOKENS_PER_PARAM_AIM * params
        advice = (f"a budget of about {math.ceil(need / tokens_per_step * plan.step_s / 60)} min"
                  if config.train.budget is not None else f"train.steps={math.ceil(need / tokens_per_step):,}")
        plan.warnings.append(
            f"pretraining will see {plan.tokens / 1e6:.2f}M tokens, {per_param:.1f} per parameter "
            f"({params / 1e6:.2f}M without embeddings); a compute-optimal run needs about "
            f"{TOKENS_PER_PARAM_AIM:.0f}: use {advice}, or a smaller model (model.d_model, model.n_layers)")
    return plan


# a forward pass costs about a third of a training step (2N of the 6N FLOPs per token)
_FORWARD_SHARE = 1 / 3


def _real_batches(config: Any, tokenizer_file: Path, arch: dict[str, Any], k: int = 12
                  ) -> tuple[list[dict[str, Tensor]], int, int, list[str]]:
    """(``k`` training batches spread over an epoch, batches per epoch, validation batches, label names)
    of the prepared data, encoded and length-bucketed as the stage will."""
    from lmforge.finetune.data import encoding_tokenizer
    from lmforge.finetune.stage import example_sources

    train, val, labels = example_sources(config, encoding_tokenizer(tokenizer_file), arch)
    batches = list(train)
    stride = max(len(batches) // k, 1)
    return batches[::stride][:k], len(train), len(val), labels


def _plan_finetune(name: str, config: Any, arch: dict[str, Any], device: torch.device, threads: int,
                   tokenizer_file: Optional[Path]) -> StagePlan:
    from lmforge.finetune.build import build_finetune_model, prompt_token_ids
    from lmforge.finetune.data import encoding_tokenizer
    from lmforge.finetune.objective import FinetuneObjective
    from lmforge.finetune.retrieval import RetrievalObjective
    from lmforge.model.transformer import TransformerConfig

    precision = resolve_precision(config.train.precision, device)
    extra = {} if config.dropout is None else {"dropout": config.dropout, "attn_dropout": config.dropout}
    model_cfg = TransformerConfig(**{**arch, **extra})
    length = min(config.data.max_length, model_cfg.max_positions)
    batch_size = config.train.batch_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model_cfg.vocab_size, (batch_size, length), generator=gen)
    tagging = config.task == "tagging"
    labels = torch.randint(0, 2, (batch_size, length) if tagging else (batch_size,), generator=gen)
    names = ["a", "b"]
    if config.task == "multilabel":  # (B, K) multi-hot
        labels = labels[:, None].expand(-1, 2).float()
    elif config.task == "regression":  # (B,) values, one output
        labels, names = labels.float(), [config.data.label_field]
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
                "labels": labels}]
    if config.task == "retrieval":  # queries and passages of the same length
        batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "passage_input_ids": ids,
                    "passage_attention_mask": torch.ones_like(ids)}]
    per_epoch = val_batches = None
    data = Path(str(config.data.path)) if config.data.path else None
    if data is not None and (data / "train.jsonl").is_file() and tokenizer_file is not None and tokenizer_file.is_file():
        batches, per_epoch, val_batches, names = _real_batches(config, tokenizer_file, arch)
        verbalizer = prompt_token_ids(config, encoding_tokenizer(tokenizer_file), names)
    else:  # a prompt-based head costs the same whichever words it reads
        verbalizer = (list(range(len(names))), 0) if config.prompt.template else None
    with torch.random.fork_rng():
        torch.manual_seed(0)
        # the stage's own model (method and frozen parts included), without reading the base weights
        model = build_finetune_model(config, model_cfg.model_dump(mode="json"), names, load_weights=False,
                                     verbalizer=verbalizer)
    objective = RetrievalObjective(config.retrieval.temperature) if config.task == "retrieval" else \
        FinetuneObjective(model, config.robust)
    step_s, memory = measure_step(model, objective, batches, config.train, device, precision, threads)
    tokens_per_step = round(sum(b["input_ids"].numel() for b in batches) / len(batches))
    needed = config.epochs * per_epoch if per_epoch else None
    steps, seconds, limited = _predict(config.train, step_s, needed)
    eval_s = (val_batches or 0) * step_s * _FORWARD_SHARE
    if per_epoch:  # one validation pass per epoch, and the test split's once at the end (about as large)
        seconds += (math.ceil(steps / per_epoch) + 1) * eval_s
    plan = StagePlan(name, "finetune", precision.precision, precision.reason, step_s, tokens_per_step, steps,
                     seconds, limited, _non_embedding_params(model), peak_memory_mib=memory,
                     batches_per_epoch=per_epoch, eval_s=eval_s)
    if per_epoch:
        plan.epochs = steps / per_epoch
        if limited == "budget" and plan.epochs < config.epochs:
            plan.warnings.append(
                f"the budget fits {plan.epochs:.1f} of {config.epochs} epochs: raise train.budget to about "
                f"{math.ceil(needed * step_s / 60)} min or lower epochs")
    return plan


def preflight(stages: list[Any], device: Optional[torch.device] = None,
              only: Optional[list[str]] = None) -> Preflight:
    """The plan of a validated pipeline (``lmforge.pipeline.plan.plan_pipeline``'s stages); ``only``:
    the training stages to plan (default: all)."""
    from lmforge.train.distributed import resolve_device

    by_name = {s.name: s for s in stages}
    trains = [s for s in stages if s.kind.name in ("pretrain", "finetune") and (only is None or s.name in only)]
    device = device or resolve_device(trains[0].config.train.device if trains else "auto")
    machine = measure_machine(device)
    plans: list[StagePlan] = []
    for stage in trains:
        config = stage.config
        threads = config.train.threads if config.train.threads != "auto" else machine.threads
        if stage.kind.name == "pretrain":
            vocab, shard_tokens = _pretrain_vocab(stage, by_name)
            plans.append(_plan_pretrain(stage.name, config, vocab, device, threads, shard_tokens))
        else:
            arch, tokenizer_file = _finetune_arch(stage, by_name)
            plans.append(_plan_finetune(stage.name, config, arch, device, threads, tokenizer_file))
    return Preflight(machine, plans)


def _upstream(stage: Any, by_name: dict[str, Any], key: str) -> Optional[Any]:
    name = stage.refs.get(key)
    return by_name.get(name) if name else None


def _pretrain_vocab(stage: Any, by_name: dict[str, Any]) -> tuple[int, Optional[int]]:
    """The vocabulary the run will have (the shards' tokenizer, or its upstream tokenizer stage's size)
    and the shards' train tokens when they exist."""
    import json

    shards = stage.config.data.shards
    meta = Path(str(shards)) / "meta.json" if shards else None
    if meta is not None and meta.is_file():
        info = json.loads(meta.read_text(encoding="utf-8"))
        splits = info.get("splits", {})
        train = splits.get("train", {}) if isinstance(splits, dict) else {}
        return int(info["tokenizer"]["vocab_size"]), train.get("tokens")
    shard_stage = _upstream(stage, by_name, "data.shards")
    tok_stage = _upstream(shard_stage, by_name, "tokenizer") if shard_stage is not None else None
    if tok_stage is not None:
        return int(tok_stage.config.vocab_size), None
    return int(stage.config.model.vocab_size), None


def _finetune_arch(stage: Any, by_name: dict[str, Any]) -> tuple[dict[str, Any], Optional[Path]]:
    """(the model architecture, the tokenizer.json it will use) of a fine-tuning stage, from its
    pretrained directory or, before that exists, from the pretraining stage that will write it."""
    from lmforge.config import ConfigError

    config = stage.config
    if config.init_from:
        if (Path(str(config.init_from)) / "config.json").is_file():
            from lmforge.model.modeldir import read_json

            return (dict(read_json(Path(str(config.init_from)) / "config.json")["model"]),
                    Path(str(config.init_from)) / "tokenizer.json")
        base = _upstream(stage, by_name, "init_from")
        if base is not None and base.kind.name == "pretrain":
            vocab, _ = _pretrain_vocab(base, by_name)
            shards = base.config.data.shards
            return (base.config.model.model_copy(update={"vocab_size": vocab}).model_dump(mode="json"),
                    Path(str(shards)) / "tokenizer.json" if shards else None)
    if config.model is not None:
        return dict(config.model), Path(str(config.tokenizer)) if config.tokenizer else None
    raise ConfigError(f"{stage.name}: init_from {config.init_from} does not exist yet and no earlier pretrain "
                      "stage writes it: the plan needs the model's architecture")


def plan_file(path: str, overrides: list[str], kind: Optional[str] = None) -> Preflight:
    """``lmforge plan FILE``: a pipeline (a file with ``stages``) or one pretrain/finetune config."""
    from lmforge.config import ConfigError, load_config_file, parse_overrides
    from lmforge.pipeline.config import load_pipeline
    from lmforge.pipeline.plan import PlannedStage, plan_pipeline
    from lmforge.pipeline.registry import kinds  # (plan's import registered the built-in kinds)

    raw = load_config_file(path)
    if "stages" in raw:
        return preflight(plan_pipeline(load_pipeline(path, overrides), path))
    if kind is None:
        kind = "finetune" if {"task", "init_from", "method"} & set(raw) else "pretrain"
    stage_kind = kinds()[kind]
    config = stage_kind.make_config(raw, parse_overrides(overrides), source=path)
    if kind == "finetune" and not (config.init_from or config.model):
        raise ConfigError(f"{path}: init_from or model: the plan needs the model's architecture")
    return preflight([PlannedStage(kind, stage_kind, config, Path(getattr(config, "out", ".")))])
