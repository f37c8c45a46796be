"""A tiny training run in its own process (killed by tests):
python -m tests.train.tiny_run OUT JSON_CFG CORPUS_PATH (written by TinyCorpus.save)."""

import json
import sys
from pathlib import Path

from lmforge.train.checkpoint import resolve_resume
from tests.lmcorpus import TinyCorpus
from tests.train.helpers import run, train_cfg

if __name__ == "__main__":
    out, overrides = Path(sys.argv[1]), json.loads(sys.argv[2])
    corpus = TinyCorpus.load(sys.argv[3])
    run(corpus, out, train_cfg(**overrides), resume=resolve_resume("auto", out / "checkpoints"))
