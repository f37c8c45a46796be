"""Atomic checkpoints: weights and optimizer tensors in safetensors, everything else in JSON.

A checkpoint is written into a temporary directory, every file fsynced, a COMPLETE marker written
last, then the directory renamed into place; a directory without the marker (a kill mid-write) is
never loaded. Nothing is unpickled: a checkpoint from an untrusted source cannot run code.

    checkpoints/step-00000100/{model.safetensors, optimizer.safetensors, state.json, COMPLETE}
    checkpoints/best.json      -> {"step": 100, "metric": ..., "value": ...}
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor, nn

MARKER = "COMPLETE"
FORMAT_VERSION = 1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into safetensors-able tensors and JSON-able rest."""
    tensors: dict[str, Tensor] = {}
    rest: dict[str, Any] = {}
    for idx, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, Tensor):
                tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                rest[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": rest}


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py = random.getstate()
    return tensors, {"python": [py[0], list(py[1]), py[2]]}


def set_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    v, internal, gauss = meta["python"]
    random.setstate((v, tuple(internal), gauss))


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def save_checkpoint(
    root: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra_tensors: Optional[dict[str, Tensor]] = None,
) -> Path:
    """Write checkpoint ``step`` atomically under ``root``; ``state`` must be JSON-serialisable."""
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    rng_tensors, rng_meta = rng_state()
    save_file({**opt_tensors, **rng_tensors, **(extra_tensors or {})}, str(tmp / "optimizer.safetensors"))
    meta = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "optimizer": opt_meta,
        "rng": rng_meta,
        "state": state,
    }
    (tmp / "state.json").write_text(json.dumps(meta), encoding="utf-8")
    for name in ("model.safetensors", "optimizer.safetensors", "state.json"):
        _fsync_file(tmp / name)
    (tmp / MARKER).write_text("ok\n")
    _fsync_file(tmp / MARKER)
    _fsync_dir(tmp)
    if final.exists():  # a rerun of the same step replaces the old copy
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint dirs, oldest first; half-written ones (no marker) are skipped."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(root: Path) -> Optional[Path]:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def read_state(path: Path) -> dict[str, Any]:
    """The loop state saved in checkpoint ``path`` (step, data position, precision...), nothing loaded."""
    return json.loads((path / "state.json").read_text(encoding="utf-8"))["state"]


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None, restore_rng: bool = True
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Load weights (and optimizer and RNG) from ``path``; returns (state, all other saved tensors)."""
    if not (path / MARKER).is_file():
        raise FileNotFoundError(f"{path}: not a complete checkpoint (no {MARKER} marker)")
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {meta.get('format_version')}, expected {FORMAT_VERSION}")
    load_model(model, str(path / "model.safetensors"))
    tensors = load_file(str(path / "optimizer.safetensors"))
    if optimizer is not None:
        optimizer.load_state_dict(_optimizer_state(tensors, meta))
    if restore_rng:
        set_rng_state(tensors, meta["rng"])
    return meta["state"], {k: v for k, v in tensors.items() if k.startswith("extra.")}


def _optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    opt = {k: v for k, v in tensors.items() if not k.startswith(("rng.", "extra."))}
    return _unflatten_optimizer(opt, meta["optimizer"])


def load_optimizer_state(path: Path) -> dict[str, Any]:
    """The optimizer state_dict saved in checkpoint ``path`` (parameters numbered as one process numbers
    them), for an optimizer built after the weights were loaded (FSDP shards it)."""
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    return _optimizer_state(load_file(str(path / "optimizer.safetensors")), meta)


def mark_best(root: Path, step: int, metric: str, value: float) -> None:
    write_json_atomic(root / "best.json", {"step": step, "metric": metric, "value": value})


def best_step(root: Path) -> Optional[int]:
    path = root / "best.json"
    if not path.is_file():
        return None
    return int(json.loads(path.read_text(encoding="utf-8"))["step"])


def prune(root: Path, keep_last: int) -> None:
    """Delete complete checkpoints beyond the newest ``keep_last``, never the best; drop stale temp dirs."""
    keep = {p.name for p in complete_checkpoints(root)[-keep_last:]}
    best = best_step(root)
    if best is not None:
        keep.add(step_dir(root, best).name)
    for path in complete_checkpoints(root):
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
    for tmp in root.glob(".tmp-step-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_resume(value: Optional[str], root: Path) -> Optional[Path]:
    """``None`` -> fresh start; ``'auto'`` -> newest complete checkpoint under ``root`` (or fresh);
    a path -> that checkpoint, which must be complete."""
    if value is None:
        return None
    if value == "auto":
        return latest_checkpoint(root)
    path = Path(value)
    if not (path / MARKER).is_file():
        raise FileNotFoundError(f"resume={value}: not a complete checkpoint directory (no {MARKER} marker)")
    return path
