"""The one execution engine of sweeps and suites (``drorl.execution``): where each item runs, the order of the
results, finished items never dispatched, the pinned workers; checked with a work function that reports the
process it ran in (no JAX, so a pool worker starts in about a second)."""

import os

import pytest

from cli_helpers import run_cli
from drorl.errors import DrorlError
from drorl.execution import SINGLE_THREAD_XLA_FLAG, Backend, core_shares, pinned_env, run_items


def where_it_ran(item: int) -> tuple[int, int, str]:
    """The item, the process that ran it and that process's XLA_FLAGS (top level: a pool worker imports it)."""
    return item, os.getpid(), os.environ.get("XLA_FLAGS", "")


def test_in_process_backend_runs_every_item_here_in_order():
    results = run_items([3, 1, 2], where_it_ran, Backend(), progress=False)
    assert [r[0] for r in results] == [3, 1, 2] and {r[1] for r in results} == {os.getpid()}


def test_pool_runs_only_unfinished_items_on_pinned_workers_and_keeps_the_order():
    items = list(range(6))
    finished = {1, 4}
    results = run_items(items, where_it_ran, Backend("local", workers=2), done=lambda item: item in finished,
                        progress=False)
    assert [r[0] for r in results] == items
    # a finished item's work only reads its result: here, not on a worker
    assert all((pid == os.getpid()) == (item in finished) for item, pid, _ in results)
    assert all(SINGLE_THREAD_XLA_FLAG in flags for item, _, flags in results if item not in finished)
    assert len({pid for item, pid, _ in results if item not in finished}) <= 2


def test_nothing_left_starts_no_worker():
    results = run_items([0, 1], where_it_ran, Backend("local", workers=2), done=lambda item: True, progress=False)
    assert {pid for _, pid, _ in results} == {os.getpid()}


def test_bad_backends_are_one_line_errors(monkeypatch, capsys):
    with pytest.raises(DrorlError, match="--backend slurm: expected local or ray"):
        Backend("slurm")
    with pytest.raises(DrorlError, match="--workers 0: expected a positive number"):
        Backend("local", workers=0)
    with pytest.raises(DrorlError, match="--workers 2: a local pool's size; Ray sizes its own"):
        Backend("ray", workers=2)
    code, _, err = run_cli(monkeypatch, capsys, "benchmark", "safety", "--profile", "smoke", "--workers", "0")
    assert code == 2 and "--workers 0: expected a positive number" in err
    code, _, err = run_cli(monkeypatch, capsys, "benchmark", "safety", "--profile", "nope")
    assert code == 2 and "--profile nope: expected one of smoke, quick, full" in err


def test_workers_share_the_cores_and_keep_the_users_xla_flags():
    assert core_shares([0, 1, 2, 3], 2) == [[0, 2], [1, 3]]
    assert core_shares([0, 1], 3) == [[0], [1], [0]]
    assert pinned_env({})["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=false"
    assert pinned_env({"XLA_FLAGS": "--xla_dump_to=/tmp"})["XLA_FLAGS"] == \
        "--xla_dump_to=/tmp --xla_cpu_multi_thread_eigen=false"
