"""The three batch sources the loop reads (token shards, token blocks in memory, labelled examples)
share one batch order (lmforge/batch_order.py): the same answers to set_epoch, rewind, the end of an
epoch, a saved state, and a state of another source."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge.finetune.data import Encoded, ExampleSource
from lmforge.tokenize.datasets import BlockDataset
from lmforge.train.data import TensorBlockSource


def _sources(pd_shards: Path) -> dict:
    ids = [[2, 5 + i % 7, 3] for i in range(40)]
    encoded = Encoded(ids, [[0] * 3 for _ in ids], [i % 2 for i in range(40)], [])
    tokens = torch.arange(5, 5 + 40 * 16)
    return {"shards": lambda: BlockDataset(str(pd_shards), "train", 32, 4, seed=3),
            "blocks": lambda: TensorBlockSource(tokens, 16, 4, seed=3),
            "examples": lambda: ExampleSource(encoded, 4, 0, seed=3)}


def _key(batch) -> list:
    return batch["input_ids"].tolist()


@pytest.mark.parametrize("kind", ["shards", "blocks", "examples"])
def test_every_source_keeps_the_same_batch_order_contract(kind, pd_shards):
    make = _sources(pd_shards)[kind]
    source = make()
    first_epoch = [_key(b) for b in source]
    assert source.epoch == 1 and source.position == 0  # an epoch that ran out hands over to the next
    second = [_key(b) for b in source]
    assert second != first_epoch  # a new shuffle every epoch

    source.rewind()
    stream = iter(source)
    head = [_key(next(stream)) for _ in range(2)]
    assert head == first_epoch[:2] and source.position == 2
    saved = source.state_dict()
    source.set_epoch(0)  # the epoch under way: the position survives (what resuming relies on)
    assert source.position == 2
    rest = [_key(b) for b in source]
    assert head + rest == first_epoch

    resumed = make()
    resumed.load_state_dict(saved)
    assert [_key(b) for b in resumed] == first_epoch[2:]  # exactly where it was saved
    resumed.set_epoch(5)
    assert (resumed.epoch, resumed.position) == (5, 0)

    other = make()
    other.seed += 1
    with pytest.raises(Exception, match="seed"):
        other.load_state_dict(saved)
