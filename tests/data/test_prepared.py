"""The one reader of `data prepare` output (data/prepared.py): the same rows from JSON lines and
Parquet, errors that name file and line, and a DONE marker of an unknown version refused by every
stage that reads prepared data."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.corpora import get_corpus
from lmforge.data.prepared import (
    check_prepared,
    find_split,
    iter_records,
    iter_split,
    iter_texts,
    read_labelled,
    split_file,
)
from lmforge.data.tagged import read_tagged
from lmforge.tokenize.tokenizer import make_tokenizer_config, train_tokenizer
from tests.utils import run_prepare


def _write_prepared(out: Path, lines: str, done: str = '{"format_version": 1}') -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.jsonl").write_text(lines, encoding="utf-8")
    (out / "DONE").write_text(done)
    return out


def test_parquet_split_reads_like_jsonl_with_nested_fields_decoded(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    raw = tmp_path / "raw.jsonl"
    records = islice(get_corpus("peoples-daily-pos").records(), 200)
    raw.write_text("".join(
        json.dumps({"text": r.text, "words": r.fields["words"], "pos": r.fields["pos"]}, ensure_ascii=False) + "\n"
        for r in records
    ), encoding="utf-8")
    layer = {"input": {"paths": [str(raw)]}}
    run_prepare(tmp_path / "jsonl", layer)
    run_prepare(tmp_path / "parquet", layer, output={"format": "parquet"})
    assert split_file(tmp_path / "parquet", "train").suffix == ".parquet"
    for split in ("train", "validation", "test"):
        from_jsonl = list(iter_split(tmp_path / "jsonl", split))
        from_parquet = list(iter_split(tmp_path / "parquet", split))
        assert from_parquet == from_jsonl and from_jsonl
    row = next(iter_split(tmp_path / "parquet", "train"))
    # the writer stores lists and dicts as JSON strings in Parquet; the reader gives them back decoded
    assert isinstance(row["words"], list) and isinstance(row["pos"], list) and isinstance(row["meta"], dict)
    assert row["words"] and len(row["words"]) == len(row["pos"]) and "source" in row["meta"]
    assert read_tagged(str(tmp_path / "parquet"), "test", "ner") == read_tagged(str(tmp_path / "jsonl"), "test", "ner")


def test_bad_lines_are_errors_naming_file_and_line(tmp_path: Path) -> None:
    good = json.dumps({"text": "好", "label": "positive"}, ensure_ascii=False)
    out = _write_prepared(tmp_path / "bad", f"{good}\n\n{{not json\n")
    with pytest.raises(ConfigError, match=r"train\.jsonl:3: not valid JSON") as caught:
        list(iter_split(out, "train"))
    assert "\n" not in str(caught.value)
    # blank lines are skipped but still counted, so later errors name the right line
    _write_prepared(out, f"{good}\n\n{json.dumps({'text': 3})}\n")
    with pytest.raises(ConfigError, match=r"train\.jsonl:3: no string field 'text'"):
        list(iter_split(out, "train"))
    _write_prepared(out, f"{good}\n\n" + json.dumps({"text": "差"}, ensure_ascii=False) + "\n")
    assert [r["text"] for r in iter_split(out, "train")] == ["好", "差"]
    with pytest.raises(ConfigError, match=r"train\.jsonl:3: no label"):
        read_labelled(out, "train")


def test_splits_and_plain_files(tmp_path: Path) -> None:
    out = _write_prepared(tmp_path / "p", '{"text": "a"}\n')
    assert find_split(out, "train") == out / "train.jsonl" and find_split(out, "test") is None
    with pytest.raises(ConfigError, match=r"p: no test\.jsonl or test\.parquet"):
        split_file(out, "test")
    text = tmp_path / "plain.txt"
    text.write_text("first line\n\n  \nsecond {line}\n", encoding="utf-8")
    assert list(iter_texts(text)) == ["first line", "second {line}"]
    assert list(iter_records(text, "body")) == [{"body": "first line"}, {"body": "second {line}"}]


@pytest.mark.parametrize("done", ["{}", "", '{"format_version": 99}'])
def test_tokenizer_stages_refuse_an_unversioned_done_marker(tmp_path: Path, done: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    rows = "".join(json.dumps({"text": f"文本{i} text {i}"}, ensure_ascii=False) + "\n" for i in range(50))
    out = _write_prepared(tmp_path / "p", rows, done)
    with pytest.raises(ConfigError, match=r"DONE: format_version .*this lmforge reads 1") as caught:
        train_tokenizer(make_tokenizer_config({"data": str(out), "out": str(tmp_path / "tok"), "progress": False}))
    assert "\n" not in str(caught.value)
    assert main(["tokenizer", "train", "--data", str(out), "--out", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "format_version" in err
    assert not (tmp_path / "tok").exists()  # refused before any work
    (out / "DONE").write_text('{"format_version": 1}')
    assert check_prepared(out) == out
