"""Validate a whole pipeline before anything runs: build every stage's config, wire inputs, check them.

Inputs: a config value ``@NAME`` (or ``@NAME/sub/path``) is the output directory of the earlier
stage NAME; an input key left unset reads the nearest earlier stage of a kind it accepts.
Every error names the pipeline file, the stage and the key.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel

from lmforge.config import ConfigError
from lmforge.pipeline.config import PipelineConfig
from lmforge.pipeline import stages as _builtin_kinds  # noqa: F401  (registers the built-in kinds)
from lmforge.pipeline.registry import StageKind, kinds

__all__ = ["PlannedStage", "RECORD", "plan_pipeline"]

RECORD = ".lmforge-stage.json"  # written by the pipeline into every stage's output directory


@dataclass
class PlannedStage:
    name: str
    kind: StageKind
    config: BaseModel
    out: Path
    refs: dict[str, str] = field(default_factory=dict)  # config key -> upstream stage name
    external: list[str] = field(default_factory=list)  # user paths whose content is fingerprinted


def _get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        tree = tree.setdefault(part, {})
    tree[parts[-1]] = value


class _Planner:
    def __init__(self, pipeline: PipelineConfig, source: str) -> None:
        self.pipeline, self.source = pipeline, source
        self.run_dir = Path(pipeline.run_dir)
        self.planned: dict[str, PlannedStage] = {}
        self.disabled = {n for n, e in pipeline.stages.items() if not e.get("enabled", True)}

    def ref(self, value: str, where: str) -> tuple[str, str]:
        """'@NAME/sub' -> (path, NAME), after checking NAME is an earlier, enabled stage."""
        name, _, sub = value[1:].partition("/")
        if name not in self.planned:
            if name in self.disabled:
                why = "is disabled (enabled: false)"
            elif name in self.pipeline.stages:
                why = "runs later; a stage can only read earlier stages"
            else:
                why = f"is not a stage of this pipeline ({', '.join(self.pipeline.stages)})"
            raise ConfigError(f"{where}: {value!r}: stage {name!r} {why}")
        path = self.run_dir / name / sub if sub else self.run_dir / name
        return str(path), name

    def resolve(self, node: Any, key: str, where: str, refs: dict[str, str]) -> Any:
        """A copy of ``node`` with every '@NAME' string replaced by its path; refs records key -> NAME."""
        if isinstance(node, dict):
            return {k: self.resolve(v, f"{key}.{k}" if key else k, where, refs) for k, v in node.items()}
        if isinstance(node, list):
            return [self.resolve(v, f"{key}[{i}]", where, refs) for i, v in enumerate(node)]
        if isinstance(node, str) and node.startswith("@"):
            path, name = self.ref(node, f"{where}.{key}")
            refs[key] = name
            return path
        return node

    def stage(self, name: str, entry: dict[str, Any]) -> PlannedStage:
        where = f"{self.source}: stages.{name}"
        kind = kinds().get(entry["kind"])
        if kind is None:
            available = ", ".join(sorted(kinds()))
            raise ConfigError(
                f"{where}.kind: stage kind {entry['kind']!r} is not available in this lmforge "
                f"(available: {available}); set enabled: false to keep the entry without running it"
            )
        user = dict(entry.get("config") or {})
        if _get(user, kind.out_key) is not None:
            raise ConfigError(f"{where}.{kind.out_key}: set by the pipeline to RUN_DIR/{name}; leave it out")
        for key, (accepted, required) in kind.inputs.items():  # defaults: the nearest earlier stage
            if _get(user, key) is None:
                feeds = [p for p in reversed(self.planned.values()) if p.kind.name in accepted]
                if feeds:
                    _set(user, key, "@" + feeds[0].name)
                elif required:
                    raise ConfigError(
                        f"{where}.{key}: no input: no earlier {' or '.join(accepted)} stage; "
                        f"set {key}: PATH (or @STAGE)"
                    )
        refs: dict[str, str] = {}
        resolved = self.resolve(user, "", where, refs)
        for key, upstream in refs.items():
            accepted = kind.inputs.get(key, ((),))[0]
            if accepted and self.planned[upstream].kind.name not in accepted:
                raise ConfigError(
                    f"{where}.{key}: stage {upstream!r} is a {self.planned[upstream].kind.name} stage; "
                    f"{key} reads the output of {' or '.join(accepted)}"
                )
        external = self._external(kind, resolved, refs, where)
        out = self.run_dir / name
        _set(resolved, kind.out_key, str(out))
        config = kind.make_config(kind.defaults, resolved, source=where)
        planned = PlannedStage(name, kind, config, out, refs, external)
        if kind.check is not None:
            try:
                kind.check(config, lambda key: self.upstream(planned, key))
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        self._check_out(out, where)
        return planned

    def _external(self, kind: StageKind, resolved: dict[str, Any], refs: dict[str, str], where: str) -> list[str]:
        """User-given input paths: they must exist now (nothing in the pipeline makes them)."""
        paths: list[tuple[str, str]] = []
        for key in kind.inputs:
            value = _get(resolved, key)
            if isinstance(value, str) and key not in refs:
                paths.append((key, value))
        if kind.paths_key:
            for i, value in enumerate(_get(resolved, kind.paths_key) or []):
                if f"{kind.paths_key}[{i}]" not in refs:
                    paths.append((f"{kind.paths_key}[{i}]", value))
        for key, value in paths:
            if not value.startswith("corpus:") and not any(c in value for c in "*?[") and not Path(value).exists():
                raise ConfigError(f"{where}.{key}: {value} does not exist (and no earlier stage makes it)")
        return [value for _, value in paths]

    def _check_out(self, out: Path, where: str) -> None:
        """Stage outputs are wiped when their config changes: never wipe a directory the pipeline did not make."""
        if out.is_dir() and any(out.iterdir()) and not (out / RECORD).is_file():
            raise ConfigError(
                f"{where}: {out} exists and was not written by `lmforge run`; remove it or choose another run_dir"
            )

    def upstream(self, stage: PlannedStage, key: str) -> Optional[tuple[str, str, BaseModel]]:
        """(name, kind, config) of the stage feeding ``key``; 'a>b' follows input a, then its input b."""
        current: Optional[PlannedStage] = stage
        for part in key.split(">"):
            if current is None or part not in current.refs:
                return None
            current = self.planned[current.refs[part]]
        return (current.name, current.kind.name, current.config) if current is not None else None


def plan_pipeline(pipeline: PipelineConfig, source: str = "pipeline") -> list[PlannedStage]:
    """Every enabled stage with its validated config, in order; raises ConfigError before anything runs."""
    planner = _Planner(pipeline, source)
    for name, entry in pipeline.stages.items():
        if name in planner.disabled:
            continue
        planner.planned[name] = planner.stage(name, copy.deepcopy(entry))  # defaults are filled in place
    if not planner.planned:
        raise ConfigError(f"{source}: every stage is disabled; nothing to run")
    return list(planner.planned.values())
