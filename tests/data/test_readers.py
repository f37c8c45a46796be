"""Readers: every format, compression, folders and globs; every unreadable unit becomes a reasoned record."""

from __future__ import annotations

import gzip
import json

import pytest
import zstandard

from lmforge.config import ConfigError
from lmforge.data.config import InputConfig
from lmforge.data.readers import check_columns, expand_inputs, read_records


def records(paths, **kwargs):
    files = expand_inputs([str(p) for p in paths])
    return list(read_records(files, InputConfig(**kwargs)))


def test_txt_lines_and_blocks(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first line\nsecond line\n\nthird\nstill third\n")
    lines = records([path])
    assert [(r.line, r.text) for r in lines] == [(1, "first line"), (2, "second line"), (3, ""), (4, "third"), (5, "still third")]
    blocks = records([path], txt_mode="block")
    assert [(r.line, r.text) for r in blocks] == [(1, "first line\nsecond line"), (4, "third\nstill third")]


def test_jsonl_fields_labels_and_bad_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(
        b'{"text": "good", "label": 1, "extra": "x"}\n'
        b'{"text": "broken"\n'
        b'["not", "an", "object"]\n'
        b'{"body": "no text field", "label": 0}\n'
        b'{"text": "no label"}\n'
        b'{"text": 42, "label": 0}\n'
        b'\xff\xfe{"text": "bad bytes"}\n'
        b'{"meta": {"body": "nested"}, "label": 0}\n'
    )
    out = records([path], label_field="label")
    assert out[0].text == "good" and out[0].label == 1 and out[0].fields == {"extra": "x"}
    assert [r.error for r in out[1:7]] == [
        "malformed_json", "not_an_object", "missing_field", "missing_field", "wrong_type", "invalid_utf8",
    ]
    assert [r.line for r in out] == list(range(1, 9))
    nested = records([path], text_field="meta.body")
    assert nested[7].text == "nested"


def test_json_array(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"text": "one"}, {"text": "two"}]))
    assert [r.text for r in records([path])] == ["one", "two"]


def test_json_array_elements_carry_their_file_line_and_keep_what_precedes_an_error(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'[\n  {"text": "one"},\n  {"text":\n   "two"},\n  {"text": "bad\xff"},\n  {"text": "four"}\n  {"x"\n]')
    out = records([path])
    assert [(r.line, r.text, r.error) for r in out[:3]] == [(2, "one", None), (3, "two", None),
                                                            (5, '  {"text": "bad\ufffd"},', "invalid_utf8")]
    assert out[3].line == 6 and out[3].text == "four"
    assert out[4].error == "malformed_json" and out[4].line == 7 and "rest of the array" in out[4].detail
    assert len(out) == 5


def test_csv_tsv_with_quotes_and_ragged_rows(tmp_path):
    csv_path = tmp_path / "a.csv"
    csv_path.write_text('text,label\n"hello, world",pos\n"multi\nline",neg\nonly-one-field\n')
    out = records([csv_path], label_field="label")
    assert (out[0].text, out[0].label) == ("hello, world", "pos")
    assert out[1].text == "multi\nline" and out[2].error == "malformed_row"
    tsv_path = tmp_path / "b.tsv"
    tsv_path.write_text("label\ttext\npos\ttab separated\n")
    assert [(r.text, r.label) for r in records([tsv_path], label_field="label")] == [("tab separated", "pos")]


def test_missing_column_is_an_error_before_work(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("body,label\nx,1\n")
    files = expand_inputs([str(path)])
    with pytest.raises(ConfigError, match="no column 'text'"):
        check_columns(files, InputConfig())


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")  # installed by the test extra
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["alpha", "beta"], "label": ["x", "y"]}), path)
    out = records([path], label_field="label")
    assert [(r.line, r.text, r.label) for r in out] == [(1, "alpha", "x"), (2, "beta", "y")]


def test_gzip_and_zstd_are_transparent(tmp_path):
    payload = "line one\nline two\n".encode()
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(payload))
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "zstd text"}\n'))
    out = records([tmp_path])
    assert [r.text for r in out] == ["line one", "line two", "zstd text"]


def test_folders_globs_and_empty_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b\n")
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "notes.bin").write_bytes(b"\x00")  # unknown formats in folders are skipped
    out = records([tmp_path])
    assert [(r.text, r.error) for r in out] == [("a", None), (None, "empty_file"), ("b", None)]
    assert [r.text for r in records([tmp_path / "**" / "b.txt"])] == ["b"]


def test_absurdly_long_line_is_rejected_without_stopping(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("short\n" + "x" * 50_000 + "\nafter\n")
    out = records([path], max_record_chars=1000)
    assert [r.error for r in out] == [None, "record_too_long", None]
    assert out[2].text == "after" and out[2].line == 3


@pytest.mark.parametrize(
    "spec, message",
    [("missing.txt", "input path not found"), ("*.nothing", "matches no file"), ("data.bin", "unsupported input format")],
)
def test_bad_paths_fail_before_work(tmp_path, spec, message):
    (tmp_path / "data.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match=message):
        expand_inputs([str(tmp_path / spec)])


def test_unknown_corpus_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown corpus 'nope'"):
        expand_inputs(["corpus:nope"])


def test_broken_parquet_is_an_error_before_work(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ConfigError, match="not a readable Parquet file"):
        check_columns(expand_inputs([str(path)]), InputConfig())
