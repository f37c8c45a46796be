"""A tiny MLM run with dropout under torchrun (2 processes, gloo), killed and resumed by the test:
torchrun ... -m tests.train.ddp_resume_run OUT CORPUS STOP_AT_STEP RESUME(0|1)."""

import faulthandler
import json
import sys
from pathlib import Path

import torch

from lmforge.train.checkpoint import resolve_resume
from lmforge.train.distributed import init_distributed, shutdown
from tests.lmcorpus import TinyCorpus
from tests.train.helpers import run, train_cfg

if __name__ == "__main__":
    faulthandler.enable(all_threads=True)  # an abort (gloo teardown) prints where each thread was
    out, corpus, stop, resume = Path(sys.argv[1]), TinyCorpus.load(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    info = init_distributed(torch.device("cpu"))
    # as shipped configs run: no peak_flops (the MFU probe is measured after the RNG is restored)
    cfg = train_cfg(steps=300, batch_size=4, checkpoint_every=2, stop_at_step=stop, peak_flops=None,
                    precision="auto")
    result = run(corpus, out, cfg, dropout=0.1, info=info,
                 resume=resolve_resume("auto", out / "checkpoints") if resume else None)
    (out / f"losses-rank{info.rank}.json").write_text(json.dumps(result.losses))
    shutdown(info)
