"""The configuration mechanism shared by every stage.

Each stage defines its own tree of small pydantic models (``lmforge/<stage>/config.py``);
this module only knows how to build one from layered sources (defaults < preset < file
< command-line options < ``key=value`` overrides), how to explain a bad value in one line,
and how to write the resolved result next to a stage's outputs.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "ConfigError",
    "Section",
    "build_config",
    "deep_merge",
    "load_config_file",
    "parse_overrides",
    "write_config",
]

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration problem, explained in one line that names the key and the bad value."""


class Section(BaseModel):
    """Base of every config model: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, JSON or TOML config file into a dict; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {first_line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["a.b=3", "c=[x, y]"]`` into a nested dict; values are parsed as YAML scalars/lists."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier value for {part!r}")
            node = child
        node[parts[-1]] = value
    return result


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """A new dict with ``top`` laid over ``base``; nested mappings merge, everything else replaces."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_config(model: type[M], *layers: dict[str, Any], source: str = "config") -> M:
    """Validate the merged layers into ``model``; the first problem becomes a one-line ConfigError."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(model, exc, source)) from None


def write_config(config: BaseModel, path: str | Path) -> None:
    """Write the resolved configuration as YAML (what actually ran, every default spelled out)."""
    data = config.model_dump(mode="json")
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _explain(model: type[BaseModel], exc: ValidationError, source: str) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc) or "(top level)"
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"{source}: unknown key '{key}'{hint}{more}"
    value = error.get("input")
    shown = json.dumps(value, ensure_ascii=False, default=str) if value is not None else "null"
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{source}: bad value for '{key}': {shown}: {error['msg']}{more}"


def _allowed_keys(model: type[BaseModel], path: list[str]) -> list[str]:
    """Field names of the nested model at ``path`` (for 'unknown key' messages)."""
    current: Any = model
    for part in path:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = fields[part].annotation
        # unwrap Optional[X] / X | None
        args = getattr(current, "__args__", None)
        if args:
            current = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), current)
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []
