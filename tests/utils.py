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
