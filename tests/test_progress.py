"""Progress off a terminal: plain lines with rate and ETA, at most one per interval."""

from types import SimpleNamespace

import pytest

from drorl import progress


@pytest.fixture(autouse=True)
def _no_terminal(monkeypatch):
    """As under nohup or with output to a file, also when pytest runs with -s on a terminal."""
    monkeypatch.setattr(progress, "Console", lambda stderr: SimpleNamespace(is_terminal=False))


def test_plain_progress_writes_rate_and_eta_lines_off_a_terminal(monkeypatch, capsys):
    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: next(clock)))  # this module's clock only
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 2.0)
    with progress.progress_bar("work", total=100, completed=20, unit="steps") as advance:  # start at t = 0
        for _ in range(4):
            advance(10)  # t = 1, 2, 3, 4: a line at t = 2 and t = 4
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3  # two interval lines and the last one (t = 5)
    # rate counts only this process's work (from 20): 20 steps in 2 s; 60 left at 10 steps/s = 6 s
    assert lines[0] == "work: 40/100 (40 %), 10 steps/s, elapsed 0:00:02, eta 0:00:06"
    assert lines[1] == "work: 60/100 (60 %), 10 steps/s, elapsed 0:00:04, eta 0:00:04"
    assert lines[2] == "work: 60/100 (60 %), 8 steps/s, elapsed 0:00:05, eta 0:00:05"


def test_plain_progress_stays_silent_for_short_work(capsys):
    with progress.progress_bar("short", total=3) as advance:
        for _ in range(3):
            advance(1)
    assert capsys.readouterr().err == ""


def test_nested_bars_on_a_terminal_are_rows_of_one_display(monkeypatch):
    import io

    from rich.console import Console

    monkeypatch.setattr(progress, "Console", lambda stderr: Console(file=io.StringIO(), force_terminal=True))
    with progress.progress_bar("benchmark", total=2, unit="runs") as outer:
        (display,) = progress._DRAWN
        with progress.progress_bar("training", total=10, unit="updates") as inner:
            assert progress._DRAWN == [display]  # no second live display
            inner(4)
            rows = {task.description: task for task in display.tasks}
            assert rows["training"].completed == 4 and rows["training"].fields["unit"] == "updates"
            assert rows["benchmark"].fields["unit"] == "runs"
        assert [task.description for task in display.tasks] == ["benchmark"]  # the finished row is removed
        outer(1)
    assert progress._DRAWN == []
