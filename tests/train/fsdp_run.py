"""A tiny causal-LM run sharded with FSDP2 under torchrun (2 processes, gloo), straight or resumed:
torchrun ... -m tests.train.fsdp_run OUT CORPUS [RESUME_CHECKPOINT]."""

import faulthandler
import json
import sys
from pathlib import Path

import torch

from lmforge.train.distributed import init_distributed, shutdown
from tests.lmcorpus import TinyCorpus
from tests.train.helpers import run, train_cfg

# 4 sequences per process and micro-batch, 2 micro-batches a step: the global batch of one process at 8 x 2
FSDP_STEPS = dict(steps=20, grad_accum=2, eval_every=10, eval_batches=2, checkpoint_every=10, keep_last=5)

if __name__ == "__main__":
    faulthandler.enable(all_threads=True)
    out, corpus = Path(sys.argv[1]), TinyCorpus.load(sys.argv[2])
    resume = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    info = init_distributed(torch.device("cpu"))
    cfg = train_cfg(batch_size=8 // info.world_size, parallel="fsdp", **FSDP_STEPS)
    result = run(corpus, out, cfg, causal=True, eval_data=True, dropout=0.0, info=info, resume=resume)
    (out / f"result-rank{info.rank}.json").write_text(json.dumps({"losses": result.losses, "evals": result.evals}))
    shutdown(info)
