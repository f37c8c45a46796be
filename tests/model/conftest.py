"""Fixtures shared by these tests (kept out of tests/conftest.py so other stages can own that file)."""

from tests.lmcorpus import corpus  # noqa: F401  (a session fixture)
