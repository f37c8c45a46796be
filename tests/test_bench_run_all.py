"""bench/run_all.py: runs each benchmark as a process and rewrites the results page from what it printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import run_all


@pytest.fixture()
def fake_benchmarks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    (bench_dir / "good.py").write_text(
        "import sys\nprint('warming up')\nprint('| system | tokens/s |')\nprint('|---|---:|')\n"
        "print('| lmforge | ' + sys.argv[1] + ' |')\nprint('lmforge / HF: 2.10x')\nprint({'accuracy': 0.5})\n"
        "import json\nprint(json.dumps({'speedup': 2.1, 'val_loss': {'hf': 8.6}}, indent=1))\n")
    (bench_dir / "bad.py").write_text("raise SystemExit('shards missing: /nowhere')\n")
    monkeypatch.setattr(run_all, "ROOT", tmp_path)
    monkeypatch.setattr(run_all, "BENCHMARKS", (
        run_all.Benchmark("good", "A good one", ("123",), ("7",), "good.py", "benchmarks-good.md"),
        run_all.Benchmark("bad", "A failing one", (), (), "bad.py", ""),
    ))
    return tmp_path


def test_run_all_rewrites_the_page_with_tables_commands_and_failures(fake_benchmarks: Path) -> None:
    page = fake_benchmarks / "docs" / "benchmarks.md"
    page.parent.mkdir()
    page.write_text("stale\n")
    code = run_all.main(["--page", str(page)])
    text = page.read_text()
    assert code == 1  # one benchmark failed, and the exit status says so
    assert "stale" not in text
    assert "PYTHONPATH=. python bench/good.py 123" in text
    assert "| lmforge | 123 |" in text and "lmforge / HF: 2.10x" in text
    assert "warming up" not in text and "{'accuracy'" not in text  # chatter and reprs are not results
    assert '"speedup"' not in text and '"hf"' not in text  # nor the JSON the script also prints
    assert "failed (exit 1)" in text and "shards missing: /nowhere" in text
    assert (fake_benchmarks / "bench" / "results" / "good.log").read_text().startswith("warming up")
    assert "torch " in text  # versions head the page


def test_quick_and_only_select_arguments_and_benchmarks(fake_benchmarks: Path) -> None:
    assert run_all.main(["--quick", "--only", "good"]) == 0
    text = (fake_benchmarks / "bench" / "results" / "quick" / "benchmarks.md").read_text()  # quick runs kept apart
    assert "| lmforge | 7 |" in text and "Quick mode" in text
    assert "Not run yet: `PYTHONPATH=. python bench/run_all.py --only bad`" in text
    assert not (fake_benchmarks / "docs" / "benchmarks.md").exists()  # the real page is untouched


def test_only_keeps_the_other_benchmarks_last_results(fake_benchmarks: Path) -> None:
    page = fake_benchmarks / "page.md"
    assert run_all.main(["--only", "good", "--page", str(page)]) == 0
    assert run_all.main(["--only", "bad", "--page", str(page)]) == 1
    text = page.read_text()
    assert "| lmforge | 123 |" in text and "failed (exit 1)" in text  # both sections, each from its own run
    assert text.count("Run 20") == 2 and "Not run yet" not in text


def test_the_real_table_names_existing_scripts() -> None:
    for bench in run_all.BENCHMARKS:
        assert (run_all.ROOT / "bench" / bench.script).is_file(), bench.script
        assert not bench.details or (run_all.ROOT / "docs" / bench.details).is_file(), bench.details


def test_an_unreadable_record_reads_as_never_run(fake_benchmarks: Path) -> None:
    page = fake_benchmarks / "page.md"
    assert run_all.main(["--only", "good", "--page", str(page)]) == 0
    (fake_benchmarks / "bench" / "results" / "good.json").write_text("{not json")
    assert run_all.main(["--only", "bad", "--page", str(page)]) == 1
    assert "Not run yet: `PYTHONPATH=. python bench/run_all.py --only good`" in page.read_text()


def test_page_only_runs_nothing(fake_benchmarks: Path) -> None:
    page = fake_benchmarks / "page.md"
    assert run_all.main(["--only", "good", "--page", str(page)]) == 0
    (fake_benchmarks / "bench" / "good.py").write_text("raise SystemExit(3)\n")  # would fail if it ran
    assert run_all.main(["--page-only", "--page", str(page)]) == 0
    assert "| lmforge | 123 |" in page.read_text()
