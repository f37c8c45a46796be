"""Packed shards: exact contents, worker-count independence, labels, and refusal of bad shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.tokenize.datasets import BlockDataset
from lmforge.tokenize.make_shards import encode_chunk, make_tokenize_config, tokenize
from lmforge.tokenize.sentences import split_sentences
from lmforge.tokenize.shards import ShardReader, ShardWriter, read_meta, token_dtype
from lmforge.tokenize.tokenizer import make_tokenizer_config, train_tokenizer

from .conftest import read_texts


def test_shards_hold_exactly_the_tokens_of_their_documents(pd_shards: Path, pd_prepared: Path) -> None:
    tokenizer = Tokenizer.from_file(str(pd_shards / "tokenizer.json"))
    meta = read_meta(pd_shards)
    assert meta["dtype"] == "uint16" and meta["tokenizer"]["vocab_size"] < 65536
    assert set(meta["splits"]) == {"train", "validation", "test"}
    for split in meta["splits"]:
        records = read_texts(pd_prepared / f"{split}.jsonl")
        reader = ShardReader(pd_shards, split)
        assert len(reader) == len(records) == meta["splits"][split]["documents"]
        expected = tokenizer.encode_batch([r["text"] for r in records], add_special_tokens=False)
        for i, encoding in enumerate(expected):
            assert reader.document(i).tolist() == encoding.ids
        assert int(reader.doc_length.sum()) == meta["splits"][split]["tokens"]
    shards = meta["splits"]["train"]["shards"]
    assert len(shards) >= 3  # the 100 kB cap cuts the train split, never a document
    assert all(s["files"]["bin"]["bytes"] <= 100_000 for s in shards)


def test_same_shards_for_any_worker_count(pd_prepared: Path, wordpiece_dir: Path, pd_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "two"
    code = main(["data", "tokenize", "--data", str(pd_prepared), "--tokenizer", str(wordpiece_dir), "--out", str(out),
                 "--workers", "2", "--no-progress", "shard_bytes=100000", "chunk_docs=64"])
    assert code == 0
    files = sorted(p.relative_to(pd_shards) for p in pd_shards.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for name in files:
        if name.name not in ("config.yaml", "report.json"):  # these record the options and the timing
            assert (pd_shards / name).read_bytes() == (out / name).read_bytes(), name
    report = json.loads((out / "report.json").read_text())
    assert report["workers"] == 2 and report["tokens_per_second"] > 0 and report["text_mb_per_second"] > 0


def test_labels_and_fields_travel_with_documents(review_shards: Path, reviews_subset_prepared: Path) -> None:
    meta = read_meta(review_shards)
    assert meta["labels"] == ["negative", "positive"]
    records = read_texts(reviews_subset_prepared / "test.jsonl")
    reader = ShardReader(review_shards, "test")
    assert [f["label"] for f in reader.fields] == [r["label"] for r in records]
    assert "meta" not in reader.fields[0] and "text" not in reader.fields[0]
    assert sum(meta["splits"]["test"]["label_counts"].values()) == len(records)


def test_sentence_boundaries_follow_punctuation(pd_shards: Path, pd_prepared: Path) -> None:
    assert split_sentences("中国经济稳定增长。物价平稳!外贸怎样?不错。") == ["中国经济稳定增长。", "物价平稳!", "外贸怎样?", "不错。"]
    assert split_sentences("Prices rose 3.5% in 1997. Trade grew! Did it? Yes") == [
        "Prices rose 3.5% in 1997. ", "Trade grew! ", "Did it? ", "Yes",
    ]
    reader = ShardReader(pd_shards, "train")
    tokenizer = Tokenizer.from_file(str(pd_shards / "tokenizer.json"))
    records = read_texts(pd_prepared / "train.jsonl")
    multi = [i for i in range(len(reader)) if reader.sentence_counts[i] >= 3][:50]
    assert len(multi) == 50
    for i in multi:
        starts = list(reader.sentence_starts(i)) + [len(reader.document(i))]
        pieces = [tokenizer.decode(reader.document(i)[a:b].tolist()).replace(" ", "") for a, b in zip(starts, starts[1:])]
        assert pieces == [s.replace(" ", "").lower() for s in split_sentences(records[i]["text"])]


def test_uint32_when_the_vocabulary_does_not_fit_16_bits(tmp_path: Path) -> None:
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    big = Tokenizer(models.WordLevel({f"w{i}": i for i in range(70_000)}, unk_token="w0"))  # ids past 65535
    big.pre_tokenizer = pre_tokenizers.Whitespace()
    chunk = encode_chunk(big, [{"text": "w69999 w1 w65536. w3"}], "text")
    writer = ShardWriter(tmp_path, "train", token_dtype(big.get_vocab_size()), 1 << 20)
    writer.add(chunk)
    shard = writer.close()["shards"][0]
    data = np.fromfile(tmp_path / f"{shard['name']}.bin", np.dtype("<u4"))
    assert data.tolist() == [69999, 1, 65536, 0, 3]


@pytest.fixture()
def shard_copy(pd_shards: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(pd_shards, copy)
    return copy


def test_unfinished_shards_are_refused(shard_copy: Path) -> None:
    (shard_copy / "DONE").unlink()  # as while `data tokenize` is still writing, or after it was killed
    with pytest.raises(ConfigError, match="not a finished `lmforge data tokenize` output"):
        ShardReader(shard_copy, "train")


def test_truncated_shard_is_refused(shard_copy: Path) -> None:
    path = shard_copy / "train" / "shard-00001.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(ConfigError, match=r"shard-00001\.bin: truncated or corrupted shard"):
        BlockDataset(str(shard_copy), "train", 16, 2)


def test_corrupted_shard_is_refused(shard_copy: Path) -> None:
    path = shard_copy / "train" / "shard-00000.bin"
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF  # same size, one byte flipped
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"shard-00000\.bin: corrupted shard: checksum"):
        ShardReader(shard_copy, "train")
    ShardReader(shard_copy, "validation")  # other splits still open


def test_mismatched_tokenizers_are_refused(shard_copy: Path, pd_prepared: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-tok"
    train_tokenizer(make_tokenizer_config(
        {"data": str(pd_prepared), "kind": "bpe", "vocab_size": 500, "out": str(other), "progress": False}
    ))
    layer = {"data": str(pd_prepared), "tokenizer": str(other), "out": str(shard_copy), "splits": ["test"], "progress": False}
    with pytest.raises(ConfigError, match="made with another tokenizer.*cannot be mixed"):
        tokenize(make_tokenize_config(layer))
    # a split written with another tokenizer behind the stage's back is refused on reading
    meta = json.loads((shard_copy / "meta.json").read_text())
    meta["splits"]["test"]["tokenizer_hash"] = "0" * 64
    (shard_copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="split 'test' was made with tokenizer 000000000000.*cannot be mixed"):
        ShardReader(shard_copy, "train")
    # a training run whose tokenizer differs from the shards' is refused
    other_hash = json.loads((other / "meta.json").read_text())["hash"]
    meta["splits"]["test"]["tokenizer_hash"] = meta["tokenizer"]["hash"]
    (shard_copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="shards were made with tokenizer"):
        BlockDataset(str(shard_copy), "train", 16, 2, tokenizer_hash=other_hash)
    # the tokenizer copied next to the shards must be the one they were made with
    shutil.copy(other / "tokenizer.json", shard_copy / "tokenizer.json")
    with pytest.raises(ConfigError, match="is not the tokenizer these shards were made with"):
        ShardReader(shard_copy, "train")
    # overwrite=true replaces the shards with ones from the new tokenizer
    tokenize(make_tokenize_config(layer, {"overwrite": True}))
    assert set(read_meta(shard_copy)["splits"]) == {"test"} and not (shard_copy / "train").exists()
    # byte-level BPE blocks (causal LM): no [CLS], documents separated by <|endoftext|>
    ds = BlockDataset(str(shard_copy), "test", 64, 2, shuffle=False)
    reader = ShardReader(shard_copy, "test")
    eos = ds.special["eos"]
    stream = np.concatenate([np.append(reader.document(i), eos) for i in range(3)])
    assert ds.special["cls"] is None and ds.batch(0)["input_ids"][0].tolist() == stream[:64].tolist()


def test_missing_inputs_are_clear_errors(tmp_path: Path, wordpiece_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "tokenize", "--data", str(tmp_path), "--tokenizer", str(wordpiece_dir), "--out", str(tmp_path / "o")]) == 2
    assert "is not a finished `lmforge data prepare` output (no DONE marker)" in capsys.readouterr().err
    (tmp_path / "DONE").write_text("{}")
    assert main(["data", "tokenize", "--data", str(tmp_path), "--tokenizer", str(wordpiece_dir), "--out", str(tmp_path / "o")]) == 2
    assert "DONE: format_version None, this lmforge reads 1" in capsys.readouterr().err
    (tmp_path / "DONE").write_text(json.dumps({"format_version": 1}))
    assert main(["data", "tokenize", "--data", str(tmp_path), "--tokenizer", str(wordpiece_dir), "--out", str(tmp_path / "o")]) == 2
    assert "none of the splits train, validation, test found" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="not a shards directory"):
        ShardReader(tmp_path, "train")
