"""The stage kinds a pipeline can run. A new kind (finetune, export...) plugs in with ``register``.

A kind says how to build its config from layers, how to run it, which config keys are inputs
read from earlier stages (and of which kinds), and how to tell its output is complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel

__all__ = ["Check", "StageKind", "StageReport", "StageResult", "get_kind", "kinds", "register"]


@dataclass
class StageResult:
    """How one stage of a run ended."""

    name: str
    kind: str
    status: str  # "ran" | "skipped"
    seconds: float
    out: Path


@dataclass
class StageReport:
    """What a finished stage contributes to the summary table and the run report."""

    rows: list[tuple[str, str]] = field(default_factory=list)  # terminal summary: (what, how much)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)  # (title, header, body)
    images: list[tuple[str, Path]] = field(default_factory=list)  # (caption, PNG file)
    curves: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)  # split -> (steps, losses)


# check(config, upstream) raises ConfigError on an incompatibility; upstream(key) gives the
# (stage name, kind, built config) that feeds input ``key``, or None for an external path.
Check = Callable[[BaseModel, Callable[[str], Optional[tuple[str, str, BaseModel]]]], None]


@dataclass(frozen=True)
class StageKind:
    name: str
    make_config: Callable[..., BaseModel]  # (*layers, source=...) -> validated config
    run: Callable[[BaseModel], Any]
    done: Callable[[Path], bool]  # is the output directory complete?
    # dotted config key -> (upstream kinds it can read, required?)
    inputs: dict[str, tuple[tuple[str, ...], bool]] = field(default_factory=dict)
    out_key: str = "out"
    paths_key: Optional[str] = None  # a list of external input paths to fingerprint (prepare: input.paths)
    defaults: dict[str, Any] = field(default_factory=dict)  # laid under the user's stage config
    check: Optional[Check] = None
    report: Callable[[Path], StageReport] = lambda out: StageReport()


_KINDS: dict[str, StageKind] = {}


def register(kind: StageKind) -> StageKind:
    """Make ``kind`` usable in pipeline files (a later registration of the same name replaces it)."""
    _KINDS[kind.name] = kind
    return kind


def kinds() -> dict[str, StageKind]:
    return dict(_KINDS)


def get_kind(name: str) -> Optional[StageKind]:
    return kinds().get(name)
