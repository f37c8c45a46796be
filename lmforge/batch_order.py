"""Where a batch source stands in its stream, the same for every source the training loop reads
(token shards, token blocks in memory, labelled examples): the epoch, the position (this rank's
batches of that epoch already handed out), the seed of the epoch's order, and which share of each
global batch this rank takes.

The contract the loop relies on:
- ``set_epoch(e)`` starts epoch ``e`` from its first batch, unless ``e`` is the epoch under way
  (after a resume the loop names the epoch it stopped in, and the position must survive);
- ``rewind()`` goes back to epoch 0, batch 0 (validation reads the same first batches every time);
- a position is counted before its batch is handed out, so a state saved after using a batch
  resumes after it;
- ``state()`` / ``restore()`` carry epoch and position with the source's identity, and a state of
  another source (or another number of ranks) is refused in one line naming the difference.
"""

from __future__ import annotations

from typing import Any, Sequence, TypeVar

__all__ = ["BatchOrder"]

T = TypeVar("T")


class BatchOrder:
    """The base of every batch source: it holds the position, the source holds its examples."""

    def __init__(self, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size): rank={rank}, world_size={world_size}")
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.position = 0, 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def rewind(self) -> None:
        self.epoch, self.position = 0, 0

    def finish(self, epoch: int) -> None:
        """The stream of ``epoch`` ran out: the next one starts (a no-op if the epoch moved on)."""
        if self.epoch == epoch:
            self.epoch, self.position = epoch + 1, 0

    def epoch_seed(self) -> int:
        """The seed of this epoch's shuffle: a new order every epoch, the same on every rank."""
        return self.seed + self.epoch

    def contiguous_share(self, batch: Sequence[T], per_rank: int) -> Sequence[T]:
        """Rank r's slice of a global batch of ``per_rank * world_size`` items: items r*per_rank...(r+1)*per_rank."""
        return batch[self.rank * per_rank:(self.rank + 1) * per_rank]

    def strided_share(self, batch: Sequence[T]) -> Sequence[T]:
        """Rank r's items of a global batch: r, r + world_size, ... (a short last batch splits evenly)."""
        return batch[self.rank::self.world_size]

    def state(self, kind: str, **identity: Any) -> dict[str, Any]:
        return {"kind": kind, "epoch": self.epoch, "position": self.position, "world_size": self.world_size,
                "seed": self.seed, **identity}

    def restore(self, state: dict[str, Any], kind: str, defaults: dict[str, Any] | None = None,
                **identity: Any) -> None:
        """Continue from ``state`` if it is this source's; ``defaults`` fill keys older states lack."""
        mine = {"kind": kind, "world_size": self.world_size, "seed": self.seed, **identity}
        for key, value in mine.items():
            theirs = state.get(key, (defaults or {}).get(key))
            if theirs != value:
                raise ValueError(f"data state is from another source: {key}={theirs!r}, here {value!r}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
