"""Progress for long work, with rate and ETA: a Rich bar on a terminal; otherwise (a log file, ``nohup``)
a plain line on stderr at most every ``PLAIN_INTERVAL_S`` seconds, so long runs show progress in logs too.

Bars nest: one opened while another is drawn (a benchmark's training run inside its count of runs)
becomes a row under it, removed when its work ends."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


class _RateColumn(TextColumn):
    """Rate in each row's own unit (``task.fields["unit"]``): nested rows count different things."""

    def __init__(self):
        super().__init__("")

    def render(self, task):  # type: ignore[override]
        speed = task.finished_speed or task.speed
        from rich.text import Text

        return Text(_rate(speed, task.fields.get("unit", "it")), style="cyan")


def _rate(speed: float | None, unit: str) -> str:
    if not speed:
        return f"- {unit}/s"
    # slow work (benchmark runs, episodes of long evaluations) reads better per minute
    return f"{speed:,.0f} {unit}/s" if speed >= 1 else f"{60 * speed:,.1f} {unit}/min"


PLAIN_INTERVAL_S = 60.0
_DRAWN: list[Progress] = []  # the Rich display on screen, if any (rows of nested bars go into it)
_silenced = False  # True: this process draws no bars


def silence() -> None:
    """No bars from this process from now on: a pool worker, whose parent draws the one bar."""
    global _silenced
    _silenced = True


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class _PlainProgress:
    """Writes ``description: done/total (pct), rate, elapsed, eta`` to stderr when ``PLAIN_INTERVAL_S``
    has passed since the last line; a last line at the end only if the work outlasted one interval."""

    def __init__(self, description: str, total: int, completed: int, unit: str):
        self.description, self.total, self.done, self.unit = description, total, completed, unit
        self.first = completed
        self.start = self.last = time.monotonic()
        self.lines = 0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= PLAIN_INTERVAL_S:
            self.write(now)

    def write(self, now: float) -> None:
        elapsed = now - self.start
        rate = (self.done - self.first) / elapsed if elapsed > 0 else 0.0
        eta = _clock((self.total - self.done) / rate) if rate > 0 else "-"
        percent = 100 * self.done / self.total if self.total else 100.0
        print(f"{self.description}: {self.done:,}/{self.total:,} ({percent:.0f} %), {_rate(rate, self.unit)}, "
              f"elapsed {_clock(elapsed)}, eta {eta}", file=sys.stderr, flush=True)
        self.last, self.lines = now, self.lines + 1


@contextlib.contextmanager
def progress_bar(description: str, total: int, completed: int = 0, enabled: bool = True,
                 unit: str = "it") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; draws description, bar, done/total, rate, elapsed and ETA on stderr."""
    if not enabled or _silenced:
        yield lambda n: None
        return
    console = Console(stderr=True)
    if not console.is_terminal:
        plain = _PlainProgress(description, total, completed, unit)
        yield plain.advance
        if plain.lines:
            plain.write(time.monotonic())
        return
    if _DRAWN:  # a row under the bar already on screen (Rich draws one live display at a time)
        bar = _DRAWN[-1]
        task = bar.add_task(description, total=total, completed=completed, unit=unit)
        try:
            yield lambda n: bar.advance(task, n)
        finally:
            bar.remove_task(task)
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TaskProgressColumn(), _RateColumn(), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn()]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(description, total=total, completed=completed, unit=unit)
        _DRAWN.append(bar)
        try:
            yield lambda n: bar.advance(task, n)
        finally:
            _DRAWN.pop()
