"""The progress bar over the whole plan (rich): ``start(total)`` once, ``advance(description)`` per step."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class PlanProgress:
    """A context manager; the step being run is shown beside the bar."""

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        self._progress = Progress(TextColumn("[bold]bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  TextColumn("{task.description}"), console=console, disable=not enabled,
                                  transient=False)
        self._task = None
        self._started = False

    def __enter__(self) -> "PlanProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None and self._started:
            self._progress.update(self._task, completed=self._progress.tasks[0].total, description="done")
        self._progress.__exit__(*exc)

    def start(self, total: int) -> None:
        self._task = self._progress.add_task("", total=total)

    def advance(self, description: str) -> None:
        """Called when a step starts: the previous one is complete."""
        if self._task is None:
            return
        if self._started:
            self._progress.advance(self._task)
        self._started = True
        self._progress.update(self._task, description=description)
