"""The deterministic, rank-sharded, resumable batch order shared by every dataset in datasets.py.

Epoch e's order is a permutation keyed by (seed, e); its batches are dealt to ranks round-robin
(global batch j*world_size + rank goes to `rank`), and the position is the number of this rank's
batches already handed out. A (epoch, position) pair therefore names exactly what comes next,
which is all `state_dict()` has to save.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Optional

import numpy as np
import torch
import xxhash
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lmforge.batch_order import BatchOrder
from lmforge.config import ConfigError
from lmforge.tokenize.shards import ShardReader, check_tokenizer

Batch = dict[str, torch.Tensor]
STATE_VERSION = 1


class ShardDataset(IterableDataset, BatchOrder):
    """Base class: subclasses define their examples (`_num_examples`, `_example`) and `_collate`."""

    def __init__(
        self,
        shards_dir: str,
        split: str,
        seq_len: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
        verify: bool = True,
        tokenizer_hash: Optional[str] = None,
    ) -> None:
        if seq_len < 8:
            raise ConfigError(f"seq_len must be at least 8, got {seq_len}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size): rank={rank}, world_size={world_size}")
        BatchOrder.__init__(self, seed, rank, world_size)  # epoch, position: this rank's batches handed out
        self.reader = ShardReader(shards_dir, split, verify=verify)
        if tokenizer_hash is not None:
            check_tokenizer(self.reader.meta, tokenizer_hash, str(shards_dir))
        self.split, self.seq_len, self.batch_size = split, seq_len, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.special = self.reader.meta["tokenizer"]["special_tokens"]
        self.pad_id = self.special["pad"] if self.special.get("pad") is not None else 0
        self._plan: tuple[int, list[np.ndarray]] = (-1, [])

    @property
    def meta(self) -> dict[str, Any]:
        return self.reader.meta

    # what subclasses provide -------------------------------------------------------------
    def _num_examples(self) -> int:
        raise NotImplementedError

    def _example(self, index: int, epoch: int) -> dict[str, Any]:
        raise NotImplementedError

    def _collate(self, examples: list[dict[str, Any]]) -> Batch:
        raise NotImplementedError

    def _options(self) -> dict[str, Any]:
        """Subclass options that change the sample stream (part of the state's identity)."""
        return {}

    # order -------------------------------------------------------------------------------
    def _rng(self, epoch: int, stream: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, stream])

    def _order(self, epoch: int) -> np.ndarray:
        n = self._num_examples()
        return self._rng(epoch).permutation(n) if self.shuffle else np.arange(n)

    def _global_batches(self, epoch: int) -> list[np.ndarray]:
        order = self._order(epoch)
        full = len(order) // self.batch_size * self.batch_size
        batches = list(order[:full].reshape(-1, self.batch_size)) if full else []
        if not self.drop_last and full < len(order):
            batches.append(order[full:])
        return batches

    def _batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches (arrays of example indices) of ``epoch``, computed once per epoch."""
        if self._plan[0] != epoch:
            batches = self._global_batches(epoch)
            per_rank = len(batches) // self.world_size if self.drop_last else -(-len(batches) // self.world_size)
            mine = [batches[j * self.world_size + self.rank] for j in range(per_rank) if j * self.world_size + self.rank < len(batches)]
            self._plan = (epoch, mine)
        return self._plan[1]

    def __len__(self) -> int:
        return len(self._batches(self.epoch))

    def batch(self, j: int, epoch: Optional[int] = None) -> Batch:
        """This rank's batch ``j`` of ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        return self._collate([self._example(int(i), epoch) for i in self._batches(epoch)[j]])

    # iteration ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        epoch, start = self.epoch, self.position
        total = len(self._batches(epoch))
        info = get_worker_info()
        if info is not None:
            # inside a DataLoader worker: worker w makes every num_workers-th batch; the loader
            # takes them round-robin, so the stream is the same as without workers
            for j in range(start + info.id, total, info.num_workers):
                yield self.batch(j, epoch)
            return
        for j in range(start, total):
            self.position = j + 1  # set before handing out, so a state saved after using it resumes after it
            yield self.batch(j, epoch)
        self.finish(epoch)

    def loader(self, num_workers: int = 0, **dataloader_args: Any) -> Iterator[Batch]:
        """The remaining batches of the current epoch made by ``num_workers`` DataLoader processes,
        in the same order as iterating the dataset, with the position kept here for `state_dict()`."""
        if num_workers == 0:
            yield from self
            return
        epoch, total = self.epoch, len(self)
        loader = DataLoader(self, batch_size=None, num_workers=num_workers, **dataloader_args)
        for batch in loader:
            self.position += 1
            yield batch
        if self.position >= total:
            self.finish(epoch)

    # resume ------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        shards = json.dumps(self.reader.split_meta["shards"], sort_keys=True)
        return {  # in the order a mismatch is reported: the most telling difference first
            "split": self.split,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            **self._options(),
            "tokenizer": self.reader.meta["tokenizer"]["hash"][:16],
            "shards": xxhash.xxh3_64_hexdigest(shards.encode("utf-8")),
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position: which epoch, how many of this rank's batches are done."""
        return {
            "version": STATE_VERSION,
            "dataset": type(self).__name__,
            "identity": self._identity(),
            "world_size": self.world_size,
            "rank": self.rank,
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where ``state`` was saved; a state of another dataset or world size is an error."""
        missing = {"version", "dataset", "identity", "world_size", "epoch", "position"} - set(state)
        if missing:
            raise ConfigError(f"not a dataset state (missing {', '.join(sorted(missing))})")
        name = type(self).__name__
        if state["dataset"] != name:
            raise ConfigError(f"dataset state is for a {state['dataset']}, not a {name}")
        if state["world_size"] != self.world_size:
            raise ConfigError(
                f"dataset state was saved with world_size={state['world_size']}, this run has world_size="
                f"{self.world_size}; exact resume needs the same number of data-parallel ranks"
            )
        mine = self._identity()
        for key in [*mine, *(k for k in state["identity"] if k not in mine)]:
            if state["identity"].get(key) != mine.get(key):
                raise ConfigError(
                    f"dataset state is for another dataset: {key} was {state['identity'].get(key)!r}, "
                    f"here it is {mine.get(key)!r}"
                )
        epoch, position = int(state["epoch"]), int(state["position"])
        total = len(self._batches(epoch))
        if not 0 <= position <= total:
            raise ConfigError(f"dataset state position {position} is outside epoch {epoch}'s {total} batches")
        self.epoch, self.position = epoch, position


def pad_stack(rows: list[np.ndarray], pad_id: int, length: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D id arrays to ``length`` (default: the longest); returns ids and mask, both (B, T)."""
    length = length or max(len(r) for r in rows)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)
