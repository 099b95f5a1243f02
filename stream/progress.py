"""One progress bar for long CLI runs (replay, backtest): rich, on stderr, or nothing.

Shows a description, a bar, done/total, a rate, elapsed time, ETA and where in event time the
run is. Disabled (``enabled=False``: not a terminal, or ``--quiet``), every call is a no-op.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

__all__ = ["ProgressBar", "event_time_label"]


def event_time_label(ms: int | None) -> str:
    """``YYYY-MM-DD HH:MM`` (UTC) of an epoch-ms event time, or ''."""
    if ms is None or ms < 0:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


class ProgressBar:
    def __init__(self, enabled: bool, description: str) -> None:
        self.enabled = enabled
        self.description = description
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> "ProgressBar":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>10}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), TextColumn("{task.fields[at]}"),
                console=Console(stderr=True), refresh_per_second=5)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=None, rate="", at="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def update(self, completed: int, total: int | None = None, *, rate: str = "",
               at: str = "", description: str | None = None) -> None:
        if self._progress is None:
            return
        fields: dict[str, Any] = {"completed": completed, "rate": rate, "at": at}
        if total is not None:
            fields["total"] = total
        if description is not None:
            fields["description"] = description
        self._progress.update(self._task, **fields)
