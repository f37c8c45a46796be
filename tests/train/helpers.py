"""Tiny runs for loop tests: 2 layers, width 32, sequence 16, real People's Daily tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from lmforge.batch_order import BatchOrder

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
        # the loop's semantics, not this machine's speed: the same precision and threads everywhere
        "precision": "fp32",
        "threads": 1,
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
    device: torch.device = torch.device("cpu"),
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
    torch.manual_seed(cfg.seed + 1 + info.rank)  # each rank's training stream (masks, dropout), as pretrain seeds
    return train_loop(
        model,
        objective,
        data,
        cfg,
        device=device,
        eval_data=val,
        out_dir=out,
        resume=resume,
        flops_per_token=1e5,
        info=info,
    )


class ListSource(BatchOrder):
    """Fixed batches (with ragged padding), for exact comparisons; positioned like every source."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def __iter__(self):
        epoch = self.epoch
        while self.position < len(self.batches):
            self.position += 1
            yield self.batches[self.position - 1]
        self.finish(epoch)

    def state_dict(self):
        return self.state("list", n_batches=len(self.batches))

    def load_state_dict(self, state):
        self.restore(state, "list", n_batches=len(self.batches))


def padded_batches(corpus, n_rows, rows_per_batch, rank=0, world_size=1):
    """Batches of rows with random lengths; with world_size > 1, rank's slice of each global batch
    (so the processes hold different numbers of real tokens)."""
    ids = corpus.tokens[: n_rows * 16].view(n_rows, 16)
    attn = torch.ones_like(ids)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 17, (n_rows,), generator=g)
    for r, n in enumerate(lengths.tolist()):
        attn[r, n:] = 0
    step = rows_per_batch * world_size
    return [
        {
            "input_ids": ids[i + lo : i + lo + rows_per_batch],
            "attention_mask": attn[i + lo : i + lo + rows_per_batch],
        }
        for i in range(0, n_rows, step)
        for lo in [rank * rows_per_batch]
    ]
