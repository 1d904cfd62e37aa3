"""Progress bars for long work: rate and ETA, via Rich; silent when disabled or not on a terminal."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


class _RateColumn(TextColumn):
    def __init__(self, unit: str):
        super().__init__("")
        self.unit = unit

    def render(self, task):  # type: ignore[override]
        speed = task.finished_speed or task.speed
        from rich.text import Text

        if not speed:
            return Text(f"- {self.unit}/s", style="cyan")
        # slow work (benchmark runs, episodes of long evaluations) reads better per minute
        shown = f"{speed:,.0f} {self.unit}/s" if speed >= 1 else f"{60 * speed:,.1f} {self.unit}/min"
        return Text(shown, style="cyan")


@contextlib.contextmanager
def progress_bar(description: str, total: int, completed: int = 0, enabled: bool = True,
                 unit: str = "it") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; draws description, bar, done/total, rate, elapsed and ETA on stderr."""
    if not enabled:
        yield lambda n: None
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TaskProgressColumn(), _RateColumn(unit), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total, completed=completed)
        yield lambda n: bar.advance(task, n)
