"""Normalised scores and what a run needs to know about its task: reference returns, the task a
dataset belongs to, and the algorithm ``Spec`` (bounds, discrete actions) derived from both."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from drorl.algos.base import Spec
from drorl.data.dataset import Dataset
from drorl.envs import action_bounds, get_task
from drorl.errors import DrorlError


def normalized_score(returns: float | np.ndarray, ref_min: float, ref_max: float) -> float | np.ndarray:
    """``100 * (R - ref_min) / (ref_max - ref_min)``: 0 is the reference minimum, 100 the maximum."""
    score = 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)
    return float(score) if score.ndim == 0 else score


def reference_scores(metadata: dict[str, Any], task: str) -> tuple[float, float, str]:
    """(random, expert) returns for normalised scores: the dataset's own, else D4RL's constants."""
    if "ref_min_score" in metadata and "ref_max_score" in metadata:
        return (float(metadata["ref_min_score"]), float(metadata["ref_max_score"]),
                str(metadata.get("ref_source", "dataset metadata")))
    info = get_task(task)
    if info.d4rl_ref_min is None:
        raise DrorlError(f"task {info.name} has no D4RL reference returns and the dataset has no "
                         f"'ref_min_score'/'ref_max_score' metadata")
    return info.d4rl_ref_min, info.d4rl_ref_max, "D4RL constants"


def task_of(dataset: Dataset, env: str | None, source: str = "dataset") -> str | None:
    """The task to evaluate on (``--env`` first, else the dataset's metadata), checked against the data."""
    name = env or dataset.metadata.get("env")
    if not name:
        return None
    try:
        info = get_task(name)
    except DrorlError as exc:
        raise DrorlError(f"{source}: {exc}") from None
    if (dataset.obs_dim, dataset.act_dim) != (info.obs_dim, info.act_dim):
        raise DrorlError(f"{source}: observations have {dataset.obs_dim} columns and actions {dataset.act_dim}; "
                         f"task {info.name} expects {info.obs_dim} and {info.act_dim}")
    require_actions_in_box(dataset, info.name, source)
    return info.name


@functools.lru_cache(maxsize=None)
def _action_box(task: str) -> tuple[np.ndarray, np.ndarray]:
    """The task's action box, made once per process (building the environment takes milliseconds)."""
    return action_bounds(get_task(task))


def require_actions_in_box(dataset: Dataset, task: str, source: str) -> None:
    """Refuse actions outside the task's box (beyond float rounding): the data belongs to another task or
    another action scaling, and training would silently fit actions the task cannot take."""
    low, high = _action_box(task)
    slack = 1e-4 * (high - low)
    outside = (dataset.actions < low - slack) | (dataset.actions > high + slack)
    if outside.any():
        row, column = (int(i) for i in np.argwhere(outside)[0])
        raise DrorlError(f"{source}: 'actions' row {row}, column {column} is {dataset.actions[row, column]:g}, "
                         f"outside task {task}'s action box [{low[column]:g}, {high[column]:g}]")


def spec_for(dataset: Dataset, task: str | None) -> Spec:
    """The spec of ``dataset`` on ``task``: the task's action box (its actions, for a discrete task) and
    name; [-1, 1] bounds when no task is known."""
    if task is None:
        return Spec.from_dataset(dataset)
    info = get_task(task)
    return Spec.from_dataset(dataset, *action_bounds(info), task=info.name,
                             num_actions=info.num_actions if info.discrete else None)
