"""Tiny runs for loop tests: 2 layers, width 32, sequence 16, real People's Daily tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from lmforge.config import build_config
from lmforge.model.heads import LanguageModel
from lmforge.model.transformer import TransformerConfig
from lmforge.train.config import TrainConfig
from lmforge.train.data import TensorBlockSource
from lmforge.train.distributed import DistInfo
from lmforge.train.loop import LoopResult, train_loop
from lmforge.train.objectives import MLMMasker, MLMObjective, causal_lm_objective


def tiny_model(vocab: int, causal: bool = False, seed: int = 0, **kw: Any) -> LanguageModel:
    torch.manual_seed(seed)
    cfg = TransformerConfig(
        vocab_size=vocab,
        max_positions=16,
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_ff=64,
        causal=causal,
        norm="pre" if causal else "post",
        type_vocab_size=0 if causal else 2,
        **kw,
    )
    return LanguageModel(cfg, heads=("lm",) if causal else ("mlm",))


def train_cfg(**over: Any) -> TrainConfig:
    base = {
        "steps": 6,
        "batch_size": 8,
        "log_every": 1,
        "progress": False,
        "tensorboard": False,
        "peak_flops": 1e12,
        "schedule": {"warmup": 0.2},
        "optim": {"lr": 3e-3},
    }
    return build_config(TrainConfig, base, over, source="test")


def run(
    corpus,
    out: Optional[Path],
    cfg: TrainConfig,
    *,
    causal: bool = False,
    resume: Optional[Path] = None,
    init_seed: int = 0,
    eval_data: bool = False,
    dropout: float = 0.1,
    objective=None,
    info: DistInfo = DistInfo(),
) -> LoopResult:
    vocab = len(corpus.vocab)
    model = tiny_model(vocab, causal, init_seed, dropout=dropout, attn_dropout=dropout)
    data = TensorBlockSource(
        corpus.tokens[:40_000],
        16,
        cfg.batch_size,
        seed=cfg.seed,
        rank=info.rank,
        world_size=info.world_size,
        prefix_id=None if causal else corpus.cls,
    )
    val = (
        TensorBlockSource(
            corpus.tokens[40_000:42_000],
            16,
            8 // info.world_size,
            shuffle=False,
            rank=info.rank,
            world_size=info.world_size,
            prefix_id=None if causal else corpus.cls,
        )
        if eval_data
        else None
    )
    if objective is None:
        objective = (
            causal_lm_objective if causal else MLMObjective(MLMMasker(vocab, corpus.mask, corpus.special_ids))
        )
    torch.manual_seed(cfg.seed + 1)  # the training stream (masks, dropout) starts from the run's seed
    return train_loop(
        model,
        objective,
        data,
        cfg,
        device=torch.device("cpu"),
        eval_data=val,
        out_dir=out,
        resume=resume,
        flops_per_token=1e5,
        info=info,
    )
