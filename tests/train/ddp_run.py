"""One tiny causal-LM run under torchrun (2 processes, gloo):
torchrun ... -m tests.train.ddp_run OUT CORPUS."""

import json
import sys
from pathlib import Path

import torch

from lmforge.train.distributed import init_distributed, shutdown
from tests.lmcorpus import TinyCorpus
from tests.train.helpers import run, train_cfg

if __name__ == "__main__":
    out, corpus = Path(sys.argv[1]), TinyCorpus.load(sys.argv[2])
    info = init_distributed(torch.device("cpu"))
    cfg = train_cfg(
        steps=4, batch_size=8 // info.world_size, eval_every=4, eval_batches=2, checkpoint_every=2
    )
    result = run(corpus, out, cfg, causal=True, eval_data=True, dropout=0.0, info=info)
    (out / f"result-rank{info.rank}.json").write_text(
        json.dumps({"losses": result.losses, "evals": result.evals})
    )
    shutdown(info)
