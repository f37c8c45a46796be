"""Tiny causal-LM runs under torchrun (2 processes, gloo):
torchrun ... -m tests.train.ddp_run OUT CORPUS."""

import faulthandler
import json
import sys
from pathlib import Path

import torch

from lmforge.train.distributed import init_distributed, shutdown
from lmforge.train.loop import train_loop
from lmforge.train.objectives import causal_lm_objective
from tests.lmcorpus import TinyCorpus
from tests.train.helpers import ListSource, padded_batches, run, tiny_model, train_cfg

if __name__ == "__main__":
    faulthandler.enable(all_threads=True)  # an abort (gloo teardown) prints where each thread was
    out, corpus = Path(sys.argv[1]), TinyCorpus.load(sys.argv[2])
    info = init_distributed(torch.device("cpu"))
    cfg = train_cfg(
        steps=4, batch_size=8 // info.world_size, eval_every=4, eval_batches=2, checkpoint_every=2
    )
    result = run(corpus, out, cfg, causal=True, eval_data=True, dropout=0.0, info=info)
    # ragged padding: the ranks hold different numbers of real tokens in every step
    model = tiny_model(len(corpus.vocab), causal=True, dropout=0.0, attn_dropout=0.0)
    data = ListSource(padded_batches(corpus, 32, 4, info.rank, info.world_size))
    ragged = train_loop(
        model,
        causal_lm_objective,
        data,
        train_cfg(steps=4, batch_size=4, optim={"name": "sgd", "lr": 1.0}),  # SGD: Adam hides a wrong scale
        device=torch.device("cpu"),
        info=info,
    )
    record = {"losses": result.losses, "evals": result.evals, "ragged": ragged.losses}
    (out / f"result-rank{info.rank}.json").write_text(json.dumps(record))
    shutdown(info)
