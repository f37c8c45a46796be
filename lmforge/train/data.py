"""A small in-memory batch source with the same contract as lmforge.tokenize.datasets.BlockDataset.

The loop needs only: iterate batches of the current epoch from the saved position, ``set_epoch``,
``state_dict``/``load_state_dict`` for exact resume, ``len``. This source packs a 1-D token tensor
into blocks of ``seq_len``; it serves tests, benchmarks and Python users with tokens in memory.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
from torch import Tensor

from lmforge.batch_order import BatchOrder


class TensorBlockSource(BatchOrder):
    """Blocks of ``seq_len`` tokens, shuffled per epoch with ``seed + epoch``; a global batch is
    ``batch_size * world_size`` consecutive blocks of that order and rank r takes its r-th slice, so
    one process with batch 8 sees exactly the blocks two processes with batch 4 see together.
    """

    def __init__(
        self,
        tokens: Tensor,
        seq_len: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        prefix_id: Optional[int] = None,
    ) -> None:
        # prefix_id: a token put first in every block (e.g. [CLS]); the block keeps seq_len tokens in all
        body = seq_len - (1 if prefix_id is not None else 0)
        n_blocks = tokens.numel() // body
        if n_blocks < batch_size * world_size:
            raise ValueError(
                f"{tokens.numel()} tokens make {n_blocks} blocks of {body}: fewer than one global batch"
            )
        blocks = tokens[: n_blocks * body].view(n_blocks, body).long()
        if prefix_id is not None:
            blocks = torch.cat([torch.full((n_blocks, 1), prefix_id, dtype=torch.long), blocks], dim=1)
        super().__init__(seed, rank, world_size)
        self.blocks = blocks  # (N, T)
        self.seq_len, self.batch_size, self.shuffle = seq_len, batch_size, shuffle

    def __len__(self) -> int:
        return len(self.blocks) // (self.batch_size * self.world_size)  # a ragged last batch is dropped

    def _order(self) -> Tensor:
        if not self.shuffle:
            return torch.arange(len(self.blocks))
        g = torch.Generator().manual_seed(self.epoch_seed())
        return torch.randperm(len(self.blocks), generator=g)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        epoch, order = self.epoch, self._order()
        global_batch = self.batch_size * self.world_size
        while self.position < len(self):
            start = self.position * global_batch
            ids = self.blocks[self.contiguous_share(order[start:start + global_batch], self.batch_size)]  # (B, T)
            self.position += 1  # counted before yielding: state_dict() after a batch resumes after it
            yield {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        self.finish(epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.state("tensor_blocks", n_blocks=len(self.blocks))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.restore(state, "tensor_blocks", n_blocks=len(self.blocks))
