"""Datasets over shards: block contents, determinism, rank sharding, exact resume, DataLoader workers,
sentence pairs and labelled examples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.config import ConfigError
from lmforge.tokenize.datasets import BlockDataset, LabelledDataset, SentencePairDataset
from lmforge.tokenize.shards import ShardReader

T, B = 16, 4


def _rows(batches: list[dict[str, torch.Tensor]], key: str = "input_ids") -> list[tuple[int, ...]]:
    return [tuple(row.tolist()) for batch in batches for row in batch[key]]


def _same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def test_blocks_are_the_document_stream_cut_in_order(pd_shards: Path) -> None:
    ds = BlockDataset(str(pd_shards), "validation", T, B, shuffle=False)
    reader = ShardReader(pd_shards, "validation")
    special = ds.meta["tokenizer"]["special_tokens"]
    stream = np.concatenate([np.append(reader.document(i), special["sep"]) for i in range(len(reader))])
    batches = list(ds)
    assert all(b["input_ids"].shape == (B, T) and b["input_ids"].dtype == torch.long for b in batches)
    assert all(bool(b["attention_mask"].all()) for b in batches)
    rows = np.array(_rows(batches))
    assert (rows[:, 0] == special["cls"]).all()
    content = rows[:, 1:].reshape(-1)
    assert np.array_equal(content, stream[: len(content)])
    assert len(ds) == (len(stream) // (T - 1)) // B


def test_blocks_can_stay_inside_documents(pd_shards: Path) -> None:
    ds = BlockDataset(str(pd_shards), "validation", T, B, cross_documents=False, shuffle=False, drop_last=False)
    reader = ShardReader(pd_shards, "validation")
    sep, pad = ds.special["sep"], ds.special["pad"]
    rows = _rows(list(ds))
    masks = _rows(list(BlockDataset(str(pd_shards), "validation", T, B, cross_documents=False, shuffle=False, drop_last=False)), "attention_mask")
    pieces: list[list[int]] = [[]]
    for row, mask in zip(rows, masks):
        body = [t for t, m in zip(row[1:], mask[1:]) if m]
        assert all(t == pad for t, m in zip(row, mask) if not m)
        assert sep not in body[:-1]  # a separator only ever ends a block: blocks never run into the next document
        pieces[-1] += body
        if body and body[-1] == sep:
            pieces.append([])
    documents = [reader.document(i).tolist() + [sep] for i in range(len(reader)) if reader.doc_length[i]]
    assert pieces[:-1] == documents


def test_shuffle_is_keyed_by_seed_and_epoch_and_ranks_partition_it(pd_shards: Path) -> None:
    def rows(epoch: int, seed: int = 0, rank: int = 0, world: int = 1) -> list[tuple[int, ...]]:
        ds = BlockDataset(str(pd_shards), "validation", T, B, seed=seed, rank=rank, world_size=world)
        ds.set_epoch(epoch)
        return _rows(list(ds))

    every_block = set(_rows(list(BlockDataset(str(pd_shards), "validation", T, B, shuffle=False, drop_last=False))))
    assert rows(0) == rows(0)
    assert rows(0) != rows(1) and rows(0, seed=1) != rows(0)
    assert set(rows(0)) <= every_block and set(rows(1)) <= every_block and len(rows(0)) >= len(every_block) - B
    r0, r1 = rows(0, rank=0, world=2), rows(0, rank=1, world=2)
    assert len(r0) == len(r1) and not set(r0) & set(r1)
    assert set(r0) | set(r1) <= every_block and len(r0) + len(r1) >= len(every_block) - 2 * B


@pytest.mark.parametrize("make", [
    lambda d: BlockDataset(d, "validation", T, B, seed=3),
    lambda d: SentencePairDataset(d, "validation", T * 2, B, seed=3, task="nsp"),
])
def test_stop_and_resume_gives_exactly_the_remaining_batches(pd_shards: Path, make) -> None:
    reference = make(str(pd_shards))
    epoch0 = list(reference)
    reference.set_epoch(1)
    epoch1 = list(reference)

    run = make(str(pd_shards))
    seen = [batch for _, batch in zip(range(5), run)]  # stop after 5 batches
    state = json.loads(json.dumps(run.state_dict()))  # survives a JSON checkpoint
    resumed = make(str(pd_shards))
    resumed.load_state_dict(state)
    resumed.set_epoch(0)  # the loop's usual call keeps the restored position
    rest = list(resumed)
    assert _same(seen + rest, epoch0)
    resumed.set_epoch(1)
    assert _same(list(resumed), epoch1)
    # stopping right after the last batch of an epoch resumes at the next epoch's start
    at_end = make(str(pd_shards))
    at_end.load_state_dict(state)
    for _ in at_end:
        pass
    final = make(str(pd_shards))
    final.load_state_dict(at_end.state_dict())
    assert final.epoch == 1 and _same(list(final), epoch1)


def test_dataloader_workers_0_and_2_give_the_same_batches_and_resume(pd_shards: Path) -> None:
    plain = list(BlockDataset(str(pd_shards), "validation", T, B, seed=5).loader(num_workers=0))
    ds = BlockDataset(str(pd_shards), "validation", T, B, seed=5)
    with_workers = list(ds.loader(num_workers=2))
    assert _same(plain, with_workers) and len(plain) == len(ds)
    assert ds.epoch == 1 and ds.state_dict()["position"] == 0  # the epoch was consumed through the workers

    ds = BlockDataset(str(pd_shards), "validation", T, B, seed=5)
    head = []
    for batch in ds.loader(num_workers=2):
        head.append(batch)
        if len(head) == 7:
            break
    resumed = BlockDataset(str(pd_shards), "validation", T, B, seed=5)
    resumed.load_state_dict(ds.state_dict())
    assert _same(head + list(resumed.loader(num_workers=2)), plain)


def test_states_of_another_dataset_or_world_size_are_refused(pd_shards: Path) -> None:
    state = BlockDataset(str(pd_shards), "validation", T, B, rank=1, world_size=2).state_dict()
    with pytest.raises(ConfigError, match="world_size=2, this run has world_size=4"):
        BlockDataset(str(pd_shards), "validation", T, B, rank=1, world_size=4).load_state_dict(state)
    with pytest.raises(ConfigError, match="another dataset: seq_len was 16, here it is 32"):
        BlockDataset(str(pd_shards), "validation", 32, B, world_size=2).load_state_dict(state)
    with pytest.raises(ConfigError, match="another dataset: split was 'validation', here it is 'test'"):
        BlockDataset(str(pd_shards), "test", T, B, world_size=2).load_state_dict(state)
    with pytest.raises(ConfigError, match="for a BlockDataset, not a SentencePairDataset"):
        SentencePairDataset(str(pd_shards), "validation", T, B, world_size=2).load_state_dict(state)
    with pytest.raises(ConfigError, match="position 99999 is outside"):
        BlockDataset(str(pd_shards), "validation", T, B, world_size=2).load_state_dict({**state, "position": 99999})


@pytest.mark.parametrize("task", ["nsp", "sop"])
def test_sentence_pairs(pd_shards: Path, task: str) -> None:
    seq_len = 48
    ds = SentencePairDataset(str(pd_shards), "train", seq_len, 8, task=task, drop_last=False)
    reader = ShardReader(pd_shards, "train")
    cls, sep = ds.special["cls"], ds.special["sep"]
    labels = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        batches = list(ds)
        epoch_labels = torch.cat([b["sentence_label"] for b in batches])
        assert abs(int(epoch_labels.sum()) - len(epoch_labels) / 2) <= 0.5  # exactly balanced each epoch
        labels.append(epoch_labels)
    for batch in batches[:20]:
        assert batch["input_ids"].shape[1] <= seq_len
        for ids, types, mask, label in zip(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], batch["sentence_label"]):
            ids = ids[mask.bool()].tolist()
            types = types[mask.bool()].tolist()
            assert ids[0] == cls and ids[-1] == sep and ids.count(sep) == 2
            cut = ids.index(sep)
            a, b = ids[1:cut], ids[cut + 1 : -1]
            assert types == [0] * (cut + 1) + [1] * (len(b) + 1) and a and b
            if task == "sop" and label == 1:
                a, b = b, a  # swapped order: B came first in the document
            if label == 0 or task == "sop":
                # B continues A inside one document
                assert any(_contains(reader.document(d).tolist(), a + b) for d in range(len(reader)) if reader.doc_length[d] >= len(a + b))
    with pytest.raises(ConfigError, match="positive_fraction"):
        SentencePairDataset(str(pd_shards), "train", seq_len, 8, positive_fraction=1.5)


def test_nsp_label_balance_follows_the_configured_fraction(pd_shards: Path) -> None:
    ds = SentencePairDataset(str(pd_shards), "train", 32, 8, positive_fraction=0.8, drop_last=False)
    labels = torch.cat([b["sentence_label"] for b in ds]).float()
    assert abs(float(labels.mean()) - 0.2) < 1 / len(labels)


def _contains(haystack: list[int], needle: list[int]) -> bool:
    n = len(needle)
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def test_labelled_examples_with_dynamic_padding_and_buckets(review_shards: Path, pd_shards: Path) -> None:
    reader = ShardReader(review_shards, "train")
    ds = LabelledDataset(str(review_shards), "train", 64, 8, drop_last=False)
    assert ds.label_names == ["negative", "positive"]
    batches = list(ds)
    seen = []
    for batch in batches:
        assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max())  # padded to the longest only
        seen += batch["labels"].tolist()
    assert len(seen) == len(reader)
    expected = [ds.label_names.index(f["label"]) for f in reader.fields]
    assert sorted(seen) == sorted(expected)
    first = ds.batch(0, epoch=0)
    ids = first["input_ids"][0][first["attention_mask"][0].bool()].tolist()
    assert ids[0] == ds.special["cls"] and ids[-1] == ds.special["sep"]

    def padding(dataset: LabelledDataset) -> int:
        return sum(int((1 - b["attention_mask"]).sum()) for b in dataset)

    bucketed = LabelledDataset(str(review_shards), "train", 64, 8, bucket_size=16, drop_last=False)
    assert padding(bucketed) < padding(LabelledDataset(str(review_shards), "train", 64, 8, drop_last=False)) / 2
    def unpadded(dataset_batches: list[dict[str, torch.Tensor]]) -> list[tuple[int, ...]]:
        return sorted(tuple(r[m.bool()].tolist()) for b in dataset_batches for r, m in zip(b["input_ids"], b["attention_mask"]))

    assert unpadded(list(bucketed)) == unpadded(batches)  # the same examples, grouped differently
    with pytest.raises(ConfigError, match="no 'label' field"):
        LabelledDataset(str(pd_shards), "train", 64, 8)


def test_every_evaluation_scores_the_same_first_batches(pd_shards: Path) -> None:
    """A partial validation pass (eval_batches) must not move the next evaluation on: the dataset keeps
    its position within an epoch for resuming, so evaluation rewinds it explicitly."""
    from lmforge.train.distributed import DistInfo
    from lmforge.train.loop import evaluate
    from lmforge.train.objectives import causal_lm_objective
    from tests.train.helpers import tiny_model, train_cfg

    val = BlockDataset(pd_shards, "validation", seq_len=T, batch_size=B, add_special_tokens=False)
    assert len(val) >= 3
    model = tiny_model(val.meta["tokenizer"]["vocab_size"], causal=True)
    cfg = train_cfg(eval_batches=2)
    # (a drifting position shows at the second evaluation already; each costs a few forward passes)
    runs = [evaluate(model, causal_lm_objective, val, cfg, torch.device("cpu"), DistInfo()) for _ in range(4)]
    assert all(r == runs[0] for r in runs), runs
