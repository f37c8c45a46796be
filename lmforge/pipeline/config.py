"""The pipeline file: a run directory and an ordered mapping of named stages.

    run_dir: runs/quickstart
    stages:
      text:      {kind: prepare, config: {input: {paths: ["corpus:peoples-daily"]}}}
      tokenizer: {kind: tokenizer, config: {data: "@text", kind: wordpiece, vocab_size: 8000}}

Each stage entry has a ``kind`` (a registered stage kind), ``enabled`` (default true) and
``config``: the stage's own config, the same mapping its ``--config`` file takes (or the path of
such a file, relative to the pipeline file). A value ``@NAME`` (or ``@NAME/sub/path``) means
"the output directory of the earlier stage NAME". Overrides address a stage's config directly:
``stages.NAME.train.budget=5m`` or ``NAME.train.budget=5m`` (only ``NAME.enabled`` is the entry's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

from pydantic import Field, field_validator

from lmforge.config import ConfigError, Section, build_config, deep_merge, load_config_file, parse_overrides

__all__ = ["PipelineConfig", "ENTRY_KEYS", "load_pipeline", "stage_overrides"]

ENTRY_KEYS = ("kind", "enabled", "config")


class PipelineConfig(Section):
    """A pipeline: where its outputs go and which stages run, in order."""

    run_dir: str = Field("runs/pipeline", description="Every stage writes into RUN_DIR/<stage name>/.")
    description: str = Field("", description="Free text shown at the top of the run report.")
    minutes: Optional[float] = Field(
        None, gt=0, description="About how long the whole pipeline takes; `quickstart --minutes N` scales budgets by N/minutes."
    )
    stages: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Stage name -> {kind, enabled, config: the stage's own config or its file}."
    )

    @field_validator("stages")
    @classmethod
    def _check_stages(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not value:
            raise ValueError("a pipeline needs at least one stage")
        for name, entry in value.items():
            if not name or "/" in name or name.startswith(("@", ".")):
                raise ValueError(f"stage name {name!r} must be a plain directory name")
            if not isinstance(entry, dict):
                raise ValueError(f"stage {name!r} must be a mapping with a 'kind', got {type(entry).__name__}")
            if not isinstance(entry.get("kind"), str):
                raise ValueError(f"stage {name!r} has no 'kind' (prepare, tokenizer, tokenize, pretrain, evaluate...)")
            if not isinstance(entry.get("enabled", True), bool):
                raise ValueError(f"stage {name!r}: 'enabled' must be true or false")
            unknown = [k for k in entry if k not in ENTRY_KEYS]
            if unknown:
                raise ValueError(
                    f"stage {name!r}: unknown key {unknown[0]!r} (a stage has {', '.join(ENTRY_KEYS)}; "
                    f"the stage's own settings go under config)"
                )
            if not isinstance(entry.get("config") or {}, dict):
                raise ValueError(f"stage {name!r}: 'config' must be a mapping or the path of a config file")
        return value


def stage_overrides(items: Iterable[str], stage_names: Iterable[str]) -> dict[str, Any]:
    """``stages.NAME.key=v`` or the short ``NAME.key=v`` (and top-level ``run_dir=...``) as one layer."""
    names = set(stage_names)
    layer: dict[str, Any] = {}
    for item in items:
        parsed = parse_overrides([item])
        top = next(iter(parsed))
        if top in names:
            parsed = {"stages": parsed}
        if "stages" in parsed:
            name, body = next(iter(parsed["stages"].items()))
            if name not in names:
                raise ConfigError(f"override {item!r}: no stage named {name!r} (stages: {', '.join(names)})")
            key = next(iter(body)) if isinstance(body, dict) else None
            if key is None:
                raise ConfigError(f"override {item!r}: give a key inside the stage, e.g. {name}.train.budget=5m")
            # Everything but `enabled` (and an explicit `config.`) is the stage's own setting, so
            # `tokenizer.kind=bpe` sets the tokenizer's kind, never the stage's kind.
            if key not in ("enabled", "config"):
                parsed = {"stages": {name: {"config": body}}}
        elif top not in PipelineConfig.model_fields:
            raise ConfigError(
                f"override {item!r}: {top!r} is neither a stage ({', '.join(names)}) nor a pipeline key (run_dir)"
            )
        layer = deep_merge(layer, parsed)
    return layer


def load_pipeline(path: str | Path, overrides: Iterable[str] = (), **top: Any) -> PipelineConfig:
    """Read a pipeline file, lay ``top`` options (run_dir=...) and key=value overrides over it."""
    data = load_config_file(path)
    for name, entry in (data.get("stages") or {}).items() if isinstance(data.get("stages"), dict) else []:
        if isinstance(entry, dict) and isinstance(entry.get("config"), str):  # a stage's own config file
            entry["config"] = load_config_file(Path(path).parent / entry["config"])
            entry["config"].pop("out", None)  # a stage's own file names its out; here RUN_DIR/<stage> is
    names = list((data.get("stages") or {}) if isinstance(data.get("stages"), dict) else [])
    layers = [data, {k: v for k, v in top.items() if v is not None}, stage_overrides(overrides, names)]
    return build_config(PipelineConfig, *layers, source=str(path))
