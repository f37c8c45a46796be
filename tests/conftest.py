"""Shared fixtures: real corpora prepared once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.utils import run_prepare


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """The precision probe caches per machine in the user's cache directory: tests use their own
    (subprocesses inherit it), so they neither read a stale entry nor write into the home directory."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def reviews_prepared(tmp_path_factory) -> tuple[Path, dict]:
    """The built-in review corpus through `data prepare` with default settings."""
    out = tmp_path_factory.mktemp("reviews")
    report = run_prepare(out, {"input": {"paths": ["corpus:reviews"]}})
    return out, report
