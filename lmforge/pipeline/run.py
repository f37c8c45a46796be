"""Run a planned pipeline: skip stages that are complete and unchanged, resume interrupted ones.

A stage's fingerprint hashes its kind, its resolved config, the run id of every stage it reads
(a re-run upstream changes it) and the size and modification time of the user files it reads.
RUN_DIR/<stage>/.lmforge-stage.json holds the fingerprint, a status (running | done) and a run id:
- done with the same fingerprint and a complete output -> skipped;
- running with the same fingerprint (interrupted) -> run again in place (pretrain resumes from
  its newest checkpoint);
- anything else, or --force -> the directory is emptied and the stage runs from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

from lmforge.config import ConfigError, write_config
from lmforge.pipeline.config import PipelineConfig
from lmforge.pipeline.plan import RECORD, PlannedStage, plan_pipeline
from lmforge.pipeline.registry import StageResult

__all__ = ["fingerprint", "read_record", "run_pipeline"]


def read_record(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / RECORD).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _file_signature(path: str) -> Any:
    """Size and modification time of a user input (all files under it, for a directory)."""
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return [st.st_size, st.st_mtime_ns]
    if p.is_dir():
        return {str(f.relative_to(p)): _file_signature(str(f)) for f in sorted(p.rglob("*")) if f.is_file()}
    return path  # corpus:NAME, or a glob: the name itself


def fingerprint(stage: PlannedStage, run_dir: Path) -> str:
    upstream = {key: read_record(run_dir / name).get("run_id") for key, name in sorted(stage.refs.items())}
    payload = {
        "kind": stage.kind.name,
        "config": stage.config.model_dump(mode="json"),
        "upstream": upstream,
        "external": {path: _file_signature(path) for path in stage.external},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_record(stage: PlannedStage, **fields: Any) -> None:
    stage.out.mkdir(parents=True, exist_ok=True)
    record = {"kind": stage.kind.name, **fields}
    (stage.out / RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def _downstream(stages: list[PlannedStage], forced: set[str]) -> set[str]:
    """The forced stages and every stage that reads one of them, directly or not."""
    result = set(forced)
    for stage in stages:
        if set(stage.refs.values()) & result:
            result.add(stage.name)
    return result


def run_pipeline(
    pipeline: PipelineConfig,
    *,
    source: str = "pipeline",
    force: Iterable[str] = (),
    report: bool = True,
    stdout_summary: bool = True,
    preflight: bool = True,
) -> list[StageResult]:
    """Validate every stage, print the pre-flight plan of the training stages that will run, then run
    those not already done; writes RUN_DIR/report.{md,html}."""
    stages = plan_pipeline(pipeline, source)
    names = [s.name for s in stages]
    forced = set(force)
    for name in forced - set(names):
        raise ConfigError(f"--force {name}: no enabled stage of that name (stages: {', '.join(names)})")
    forced = _downstream(stages, forced)
    run_dir = Path(pipeline.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _RunLock(run_dir):
        write_config(pipeline, run_dir / "pipeline.yaml")
        if preflight:
            _print_preflight(stages, run_dir, forced)
        results = _run_stages(stages, run_dir, forced)
        if report:
            from lmforge.pipeline.report import print_run_summary, write_run_report

            write_run_report(pipeline, stages, results)
            if stdout_summary:
                print_run_summary(stages, results, run_dir)
    return results


class _RunLock:
    """One `lmforge run` per run directory: two would empty and fill the same stage folders."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lmforge-run.lock"

    def __enter__(self) -> "_RunLock":
        try:
            pid = int(self.path.read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid is not None and pid != os.getpid() and _alive(pid):
            raise ConfigError(f"{self.path.parent}: another `lmforge run` (pid {pid}) is using this run directory")
        self.path.write_text(f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _print_preflight(stages: list[PlannedStage], run_dir: Path, forced: set[str]) -> None:
    from lmforge.pipeline.preflight import preflight
    from lmforge.progress import console

    todo = [s for s in stages if s.kind.name in ("pretrain", "finetune")
            and not _up_to_date(s, fingerprint(s, run_dir), read_record(s.out), forced)]
    if todo:
        plan = preflight(stages, only=[s.name for s in todo])
        for line in plan.lines():
            console.print(line, highlight=False)
        (run_dir / "preflight.json").write_text(json.dumps(plan.to_json(), indent=1) + "\n", encoding="utf-8")


def _up_to_date(stage: PlannedStage, fp: str, record: dict[str, Any], forced: set[str]) -> bool:
    """Complete, unchanged (fingerprint ``fp``, its record ``record``) and not forced: skipped."""
    return (record.get("fingerprint") == fp and stage.name not in forced
            and record.get("status") == "done" and stage.kind.done(stage.out))


def _run_stages(stages: list[PlannedStage], run_dir: Path, forced: set[str]) -> list[StageResult]:
    from lmforge.progress import console

    results: list[StageResult] = []
    for stage in stages:
        fp = fingerprint(stage, run_dir)
        record = read_record(stage.out)
        same = record.get("fingerprint") == fp and stage.name not in forced
        if _up_to_date(stage, fp, record, forced):
            console.rule(f"[dim]{stage.name} ({stage.kind.name}): up to date, skipped")
            seconds = float(record.get("seconds", 0.0))  # what the stage took when it ran
            results.append(StageResult(stage.name, stage.kind.name, "skipped", seconds, stage.out))
            continue
        resuming = same and record.get("status") == "running"
        if not resuming and stage.out.exists():
            shutil.rmtree(stage.out)  # changed config or inputs: stale outputs must not be resumed
        console.rule(f"[bold]{stage.name} ({stage.kind.name})" + (": resuming" if resuming else ""))
        _write_record(stage, fingerprint=fp, status="running")
        started = time.perf_counter()
        stage.kind.run(stage.config)
        seconds = time.perf_counter() - started
        if not stage.kind.done(stage.out):
            raise RuntimeError(f"stage {stage.name} finished but its output in {stage.out} is not complete")
        _write_record(stage, fingerprint=fp, status="done", run_id=uuid.uuid4().hex, seconds=round(seconds, 3))
        results.append(StageResult(stage.name, stage.kind.name, "ran", seconds, stage.out))
    return results


def scale_budgets(pipeline: PipelineConfig, factor: float) -> PipelineConfig:
    """Multiply every stage's ``train.budget`` by ``factor`` (quickstart --minutes)."""
    from lmforge.train.config import parse_duration

    if factor <= 0:
        raise ConfigError(f"--minutes must be positive (scale factor {factor})")
    stages = json.loads(json.dumps(pipeline.stages))
    for entry in stages.values():
        config = entry.get("config") or {}
        train: Optional[dict[str, Any]] = config.get("train") if isinstance(config.get("train"), dict) else None
        if train and train.get("budget") is not None:
            train["budget"] = round(float(parse_duration(train["budget"]) or 0.0) * factor, 1)
    return pipeline.model_copy(update={"stages": stages})
