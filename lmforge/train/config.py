"""Typed configuration of training (shared by pretraining and fine-tuning) and of `lmforge pretrain`."""

from __future__ import annotations

import importlib.util
import re
from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from lmforge.config import Section
from lmforge.model.transformer import TransformerConfig

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(value: str | float | int | None) -> Optional[float]:
    """'30m', '1h30m', '90s', '45' (seconds) -> seconds."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    text = str(value).strip().lower()
    match = _DURATION.match(text)
    if not text or not match or not any(match.groups()):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"not a duration like 30m, 1h30m or 90s: {value!r}") from None
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s


class OptimConfig(Section):
    name: Literal["adamw", "adafactor", "lamb", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(
        0.01, ge=0, description="Not applied to biases, norms or embeddings' 1-D params."
    )
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only.")
    nesterov: bool = Field(False, description="SGD only.")
    layer_decay: Optional[float] = Field(
        None, gt=0, le=1, description="Layer-wise LR decay factor per layer."
    )
    fused: Optional[bool] = Field(None, description="Fused AdamW; None: where the device supports it.")


class ScheduleConfig(Section):
    kind: Literal["linear", "cosine", "constant", "wsd", "onecycle"] = "linear"
    warmup: float = Field(0.06, ge=0, lt=1, description="Warmup as a fraction of training (steps or budget).")
    warmup_steps: Optional[int] = Field(None, ge=0, description="Warmup in steps; overrides warmup.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final LR as a fraction of the peak.")
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: share of training spent decaying.")


class EarlyStopping(Section):
    metric: str = Field("val_loss", description="Any logged eval metric (val_loss, val_ppl, val_mlm_acc...).")
    mode: Literal["min", "max"] = "min"
    patience: Optional[int] = Field(
        None, ge=1, description="Evaluations without improvement; None: never stop."
    )
    min_delta: float = Field(0.0, ge=0)


TrackerName = Literal["jsonl", "tensorboard", "wandb"]
DEFAULT_TRACKERS: tuple[TrackerName, ...] = ("jsonl", "tensorboard")


class WandbConfig(Section):
    project: str = Field("lmforge", description="Weights & Biases project of the run.")
    name: Optional[str] = Field(None, description="Run name; None: the output directory's name.")
    mode: Literal["offline", "online"] = Field(
        "offline", description="offline: the run's files go to OUT/wandb and nothing leaves the machine "
        "(`wandb sync OUT/wandb/offline-run-*` uploads them later); online: streams to W&B (needs `wandb login`).")


class TrainConfig(Section):
    steps: int = Field(
        1000, gt=0, description="Optimizer steps (the schedule's length when there is no budget)."
    )
    budget: Optional[float] = Field(
        None, gt=0, description="Wall-clock budget ('30m'): schedule follows time."
    )
    stop_at_step: Optional[int] = Field(
        None, gt=0, description="Stop (resumably) at this step, for staged runs."
    )
    batch_size: int = Field(32, gt=0, description="Sequences per micro-batch per process.")
    grad_accum: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    clip_norm: Optional[float] = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 where it is native and measured faster than fp32 on this device, fp16 "
        "with loss scaling on CUDA devices without bf16, fp32 otherwise (printed and logged; the probe is "
        "cached). An explicit bf16 on a CPU without native bf16 runs, with a warning giving the slowdown.")
    threads: Union[Literal["auto"], int] = Field(
        "auto", description="CPU threads for this run: auto measures which count runs fastest now (one "
        "process; under torchrun each process keeps its own); a resumed run keeps the count it started with.")
    compile: Union[bool, Literal["inductor", "aot_eager", "eager"]] = Field(
        False, description="torch.compile the model: true (inductor, generated kernels) or a backend name.")
    activation_checkpointing: bool = False
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp", description="Under torchrun: ddp (every rank holds the whole model and optimizer) or fsdp "
                           "(FSDP2: parameters, gradients and optimizer state sharded over the ranks; "
                           "checkpoints in the one-process format). Ignored in one process.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1 ...")
    seed: int = 0
    max_bad_steps: int = Field(
        10, ge=1, description="Stop after this many steps skipped for non-finite values."
    )
    log_every: int = Field(10, gt=0)
    eval_every: Optional[int] = Field(None, gt=0)
    eval_batches: Optional[int] = Field(None, gt=0, description="Cap on validation batches per evaluation.")
    checkpoint_every: Optional[int] = Field(None, gt=0)
    keep_last: int = Field(2, ge=1, description="Complete checkpoints kept besides the best one.")
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    peak_flops: Optional[float] = Field(None, gt=0, description="Device peak FLOP/s for MFU; None: measured.")
    progress: bool = True
    trackers: list[TrackerName] = Field(
        default_factory=lambda: list(DEFAULT_TRACKERS),
        description="Where metrics go: jsonl (OUT/metrics.jsonl, always: the reports read it), tensorboard "
                    "(OUT/tb), wandb (Weights & Biases, `pip install 'lmforge[wandb]'`; see train.wandb).")
    tensorboard: Optional[bool] = Field(
        None, description="The switch from before train.trackers, kept working: false drops tensorboard from "
                          "trackers, true adds it; None leaves trackers as they are.")
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

    @field_validator("threads")
    @classmethod
    def _threads(cls, value: object) -> object:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"threads must be auto or a count >= 1, got {value}")
        return value

    @field_validator("budget", mode="before")
    @classmethod
    def _duration(cls, value: object) -> Optional[float]:
        return parse_duration(value)  # type: ignore[arg-type]

    @model_validator(mode="before")
    @classmethod
    def _tensorboard_switch(cls, data: Any) -> Any:
        # Applied to the merged layers, so `train.tensorboard=false` from any layer turns TensorBoard off
        # whatever the trackers list says; the resolved config reads back to the same trackers.
        if not isinstance(data, dict) or not isinstance(data.get("tensorboard"), bool):
            return data
        trackers = list(data.get("trackers") or DEFAULT_TRACKERS)
        if data["tensorboard"]:
            trackers += [] if "tensorboard" in trackers else ["tensorboard"]
        else:
            trackers = [t for t in trackers if t != "tensorboard"]
        return {**data, "trackers": trackers}

    @field_validator("trackers")
    @classmethod
    def _jsonl_kept(cls, value: list[str]) -> list[str]:
        if "jsonl" not in value:
            raise ValueError("must include jsonl: metrics.jsonl feeds the run report, the curves and evaluation")
        if "wandb" in value and importlib.util.find_spec("wandb") is None:  # found now, not after setup
            raise ValueError("wandb needs the wandb package: pip install 'lmforge[wandb]'")
        return list(dict.fromkeys(value))  # each tracker once, in the order given


class ObjectiveConfig(Section):
    kind: Literal["mlm", "mlm+nsp", "mlm+sop", "clm"] = "mlm"
    mask_rate: float = Field(0.15, gt=0, lt=1)
    whole_word: bool = Field(False, description="Mask whole words (Chinese words found with jieba).")


class EmbeddingInitConfig(Section):
    kind: Literal["random", "ppmi-svd"] = Field(
        "random", description="ppmi-svd: start the token embeddings from count-based vectors of the training "
        "shards (PPMI + truncated SVD of the co-occurrence matrix; seconds on a CPU) instead of random ones.")
    window: int = Field(4, ge=1, description="ppmi-svd: tokens on either side that count as a token's context.")


class DataConfig(Section):
    shards: Optional[str] = Field(None, description="Directory written by `lmforge data tokenize`.")
    seq_len: int = Field(128, gt=1)
    cross_documents: bool = True


class PretrainConfig(Section):
    out: str = Field("runs/pretrain", description="Output directory.")
    resume: Optional[str] = Field(
        None, description="'auto' (newest complete checkpoint) or a checkpoint dir."
    )
    data: DataConfig = Field(default_factory=DataConfig)
    model: TransformerConfig = Field(default_factory=TransformerConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    embedding_init: EmbeddingInitConfig = Field(default_factory=EmbeddingInitConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _check(self) -> "PretrainConfig":
        if self.data.seq_len > self.model.max_positions:
            raise ValueError(
                f"data.seq_len={self.data.seq_len} exceeds model.max_positions={self.model.max_positions}"
            )
        if self.objective.kind == "clm" and not self.model.causal:
            raise ValueError("objective.kind=clm needs model.causal=true")
        if self.objective.kind != "clm" and self.model.causal:
            raise ValueError(
                f"objective.kind={self.objective.kind} needs a bidirectional model (model.causal=false)"
            )
        if self.embedding_init.kind == "ppmi-svd" and not self.data.shards:
            raise ValueError("embedding_init.kind=ppmi-svd counts the training shards: set data.shards")
        return self
