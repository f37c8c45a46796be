"""`python -m lmforge ...` (and so `torchrun --nproc_per_node 2 -m lmforge pretrain ...`)."""

import sys

from lmforge.cli import main

sys.exit(main())
