"""A battery of malformed inputs for `data prepare`: no tracebacks; every record read is kept or
rejected with a reason (record-level damage); one-line errors naming the file (file-level damage)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import zstandard

from lmforge.cli import main
from lmforge.config import ConfigError
from tests.utils import read_jsonl, run_prepare

GOOD = [f"review number {i}: the soup was {'hot' if i % 2 else 'cold'} and the service friendly" for i in range(6)]


def _jsonl(rows: list[str]) -> bytes:
    return "".join(json.dumps({"text": t}) + "\n" for t in rows).encode()


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# name -> file bytes; each holds good records and one or more damaged ones.
RECORD_LEVEL: dict[str, bytes] = {
    "deep.jsonl": _jsonl(GOOD[:3]) + b'{"text": "deep", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}\n"
                  + b"[" * 100_000 + b"\n" + _jsonl(GOOD[3:]),
    "surrogate.jsonl": _jsonl(GOOD[:3]) + b'{"text": "bad \\ud800 text"}\n{"text": "a perfectly fine review text with a damaged note", "note": "\\udfff"}\n'
                       + _jsonl(GOOD[3:]),
    "array.json": ("[\n" + ",\n".join(json.dumps({"text": t}) for t in GOOD[:3]) + ",\n").encode()
                  + b'{"text": "caf\xe9 broken"},\n'
                  + (",\n".join(json.dumps({"text": t}) for t in GOOD[3:]) + "\n]\n").encode(),
    "bom.jsonl": b"\xef\xbb\xbf" + _jsonl(GOOD),
    "crlf.csv": ("text,label\r\n" + "".join(f"{t},x\r\n" for t in GOOD)).encode(),
    "nul.txt": ("\n".join(GOOD[:3]) + "\n\x00\x00\x00\nnul \x00 inside text\n" + "\n".join(GOOD[3:]) + "\n").encode(),
    "nul.csv": ("text\n" + "\n".join(GOOD[:3]) + "\nbad\x00row\n" + "\n".join(GOOD[3:]) + "\n").encode(),
    "ragged.csv": ("text,label\n" + "".join(f"{t},x\n" for t in GOOD[:3]) + "one,two,three\nlonely\n"
                   + "".join(f"{t},x\n" for t in GOOD[3:])).encode(),
    "frames.jsonl.zst": zstandard.ZstdCompressor().compress(_jsonl(GOOD[:3]))
                        + zstandard.ZstdCompressor().compress(_jsonl(GOOD[3:])),
    "empty.txt": b"",
    "empty.jsonl.gz": _gz(b""),
    "long.txt": ("\n".join(GOOD[:3]) + "\n" + "x" * 2_000_000 + "\n" + "\n".join(GOOD[3:]) + "\n").encode(),
}


@pytest.mark.parametrize("name", sorted(RECORD_LEVEL))
def test_damaged_records_are_all_accounted(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(RECORD_LEVEL[name])
    run_prepare(tmp_path / "out", {"input": {"paths": [str(path)], "max_record_chars": 1_000_000}}, workers=1)
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    counts = report["counts"]
    assert counts["kept"] + counts["rejected"] == counts["read"] and counts["accounted"] is True
    rejected = read_jsonl(tmp_path / "out" / "rejected.jsonl")  # valid UTF-8 JSON, one row per rejection
    assert len(rejected) == counts["rejected"]
    assert all(r["reason"] and r["source"] == str(path) for r in rejected)
    if name != "empty.txt" and name != "empty.jsonl.gz":
        assert counts["kept"] >= 1


def test_each_damaged_record_gets_its_own_reason_and_line(tmp_path: Path) -> None:
    paths = []
    for name in ("deep.jsonl", "surrogate.jsonl", "array.json"):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(RECORD_LEVEL[name])
    run_prepare(tmp_path / "out", {"input": {"paths": [str(p) for p in paths]}}, workers=1)
    rejected = {(Path(r["source"]).name, r["line"]): r["reason"] for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")}
    assert rejected[("deep.jsonl", 4)] == rejected[("deep.jsonl", 5)] == "too_deeply_nested"
    assert rejected[("surrogate.jsonl", 4)] == "invalid_unicode"
    assert rejected[("surrogate.jsonl", 5)] == "invalid_unicode"  # in a field that would be kept
    assert rejected[("array.json", 5)] == "invalid_utf8"  # the array element on line 5 of the file
    kept = [row["text"] for split in ("train", "validation", "test")
            for row in read_jsonl(tmp_path / "out" / f"{split}.jsonl")]
    assert sum(t in kept for t in GOOD) == len(GOOD)  # every good record survives its damaged neighbours


def test_all_frames_of_a_zstd_file_are_read(tmp_path: Path) -> None:
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(RECORD_LEVEL["frames.jsonl.zst"])
    report = run_prepare(tmp_path / "out", {"input": {"paths": [str(path)]}}, workers=1)
    assert report["counts"]["read"] == len(GOOD)  # not only the first frame's 3


FILE_LEVEL: dict[str, tuple[bytes, str]] = {
    "truncated.jsonl.gz": (_gz(_jsonl(GOOD * 50))[:-30], "truncated"),
    "notgzip.jsonl.gz": (_jsonl(GOOD), "not a gzip file"),
    "trailing.jsonl.gz": (_gz(_jsonl(GOOD)) + b"garbage after the gzip stream", "after the end"),
    "utf16.txt": ("\n".join(GOOD).encode("utf-16"), "UTF-16"),
    "utf16be.jsonl": (b"\xfe\xff" + _jsonl(GOOD).decode().encode("utf-16-be"), "UTF-16"),
    "bad.zst": (b"not zstd at all", "zstd"),
    "truncated.jsonl.zst": (zstandard.ZstdCompressor().compress(_jsonl(GOOD * 50))[:-9], "truncated zstd"),
    "x.parquet.gz": (_gz(b"PAR1 not really"), "compressed parquet"),
}


@pytest.mark.parametrize("name", sorted(FILE_LEVEL))
def test_file_level_damage_is_one_line_naming_the_file(tmp_path: Path, name: str) -> None:
    data, words = FILE_LEVEL[name]
    path = tmp_path / (name if not name.endswith(".zst") else "bad.jsonl.zst")
    path.write_bytes(data)
    with pytest.raises(ConfigError) as err:
        run_prepare(tmp_path / "out", {"input": {"paths": [str(path)]}}, workers=1)
    message = str(err.value)
    assert str(path) in message and words.lower() in message.lower() and "\n" not in message
    assert not (tmp_path / "out").exists()  # refused before any output is written


def test_cli_shows_one_line_for_a_broken_gzip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(FILE_LEVEL["truncated.jsonl.gz"][0])
    assert main(["data", "prepare", "--input", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmforge: error: ") and str(path) in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_cli_accounts_for_deep_and_surrogate_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(RECORD_LEVEL["deep.jsonl"] + RECORD_LEVEL["surrogate.jsonl"])
    assert main(["data", "prepare", "--input", str(path), "--out", str(tmp_path / "out"), "--no-progress",
                 "workers=1"]) == 0
    counts = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))["counts"]
    assert counts["read"] == 16 and counts["kept"] + counts["rejected"] == 16
    assert "Traceback" not in capsys.readouterr().err
