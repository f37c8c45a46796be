"""Progress bars (rate and ETA) and end-of-stage summary tables, on stderr via rich."""

from __future__ import annotations

import sys
from typing import Iterable, Optional

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

console = Console(stderr=True)


class StageProgress:
    """A progress bar over bytes of input, also showing records done and their rate."""

    def __init__(self, description: str, total_bytes: Optional[int], enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[records]:,} records ({task.fields[rate]:,.0f}/s)"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.enabled,
        )
        self._task = self._progress.add_task(description, total=total_bytes, records=0, rate=0.0)

    def __enter__(self) -> "StageProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def update(self, bytes_done: int, records: int) -> None:
        elapsed = self._progress.tasks[0].elapsed or 0.0
        rate = records / elapsed if elapsed > 0 else 0.0
        self._progress.update(self._task, completed=bytes_done, records=records, rate=rate)


def print_summary(title: str, rows: Iterable[tuple[str, str]]) -> None:
    """A two-column table: what, how much."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
