"""Shared fixtures: real corpora prepared once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.utils import run_prepare


@pytest.fixture(scope="session")
def reviews_prepared(tmp_path_factory) -> tuple[Path, dict]:
    """The built-in review corpus through `data prepare` with default settings."""
    out = tmp_path_factory.mktemp("reviews")
    report = run_prepare(out, {"input": {"paths": ["corpus:reviews"]}})
    return out, report
