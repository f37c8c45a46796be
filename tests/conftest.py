"""Shared fixtures: real corpora prepared once per session; the device the `device`-marked tests run on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--lmforge-device", default="cpu",
                     help="device for the tests that take the `device` fixture (cpu, cuda, cuda:1); "
                          "bench/gpu_check.py runs `pytest -m device --lmforge-device cuda`")


def machine_line() -> str:
    """The machine beside every run's results: kernels (int8 saturation, bf16 emulation) differ by CPU."""
    from lmforge.train.hardware import device_key

    try:
        flags = set(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        flags = set()
    isa = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16") if f in flags)
    return f"lmforge tests ran on: {device_key(torch.device('cpu'))}; cpu flags: {isa or 'unknown'}; {os.cpu_count()} cpus"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(machine_line())  # at the end, so it shows under -q and in a log's tail


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "device: runs on the device given by --lmforge-device (default cpu)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # every test that takes the fixture is marked, so `-m device` selects exactly the device-able tests
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """Where model/training tests written for any device run; CPU unless --lmforge-device says otherwise."""
    dev = torch.device(pytestconfig.getoption("--lmforge-device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--lmforge-device {dev}: torch.cuda.is_available() is False here")
    return dev


@pytest.fixture(scope="session")
def reviews_prepared(tmp_path_factory) -> tuple[Path, dict]:
    """The built-in review corpus through `data prepare` with default settings."""
    out = tmp_path_factory.mktemp("reviews")
    report = run_prepare(out, {"input": {"paths": ["corpus:reviews"]}})
    return out, report
