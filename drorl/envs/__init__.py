"""Gymnasium MuJoCo tasks, the env factory and dynamics perturbations."""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import gymnasium
import mujoco
import numpy as np

from drorl.envs.perturbations import (
    FAMILIES,
    AnyPerturbation,
    CombinedPerturbation,
    Perturbation,
    PerturbedEnv,
    default_grid,
    parse_families,
    parse_sweep,
)
from drorl.envs.tasks import TASKS, TaskInfo, get_task


# MuJoCo notices about Gymnasium's own model files (HalfCheetah-v5's XML): nothing a user can act on.
_IGNORED_MODEL_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)


@contextlib.contextmanager
def _mujoco_warnings_as_python_warnings() -> Iterator[None]:
    """Route MuJoCo warnings to Python's ``warnings`` (dropping ``_IGNORED_MODEL_WARNINGS``).

    Otherwise MuJoCo prints each one to stderr and appends it to MUJOCO_LOG.TXT in the working
    directory, once per env built: dozens of lines for one batched evaluation.
    """
    previous = mujoco.get_mju_user_warning()

    def handle(message: str) -> None:
        if not message.startswith(_IGNORED_MODEL_WARNINGS):
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    mujoco.set_mju_user_warning(handle)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def make_env(task: str | TaskInfo, perturbation: AnyPerturbation | None = None) -> gymnasium.Wrapper:
    """Build the task's Gymnasium env (with its time limit) wrapped in a ``PerturbedEnv`` (MuJoCo
    tasks) or a ``CartPolePerturbedEnv``; a safety task's ``SafetyEnv`` takes a ``Disturbance``."""
    info = get_task(task)
    if info.name.startswith("safe-"):
        from drorl.envs.safety import SafetyEnv

        env = SafetyEnv(info.name)
        env.set_perturbation(perturbation)
        return env
    if info.name == "cartpole":
        from drorl.envs.cartpole import CartPolePerturbedEnv

        return CartPolePerturbedEnv(gymnasium.make(info.gym_id), perturbation)
    with _mujoco_warnings_as_python_warnings():
        env = gymnasium.make(info.gym_id)
    return PerturbedEnv(env, info, perturbation)


def action_bounds(task: str | TaskInfo) -> tuple[np.ndarray, np.ndarray]:
    """The action box (float32): the env's for continuous tasks, ``[0, num_actions - 1]`` for discrete ones."""
    info = get_task(task)
    if info.discrete:
        return np.zeros(1, np.float32), np.full(1, info.num_actions - 1, np.float32)
    env = make_env(info)
    low, high = env.action_space.low.astype(np.float32), env.action_space.high.astype(np.float32)
    env.close()
    return low, high


__all__ = [
    "FAMILIES", "TASKS", "AnyPerturbation", "CombinedPerturbation", "Perturbation", "PerturbedEnv", "TaskInfo",
    "action_bounds", "default_grid", "get_task", "make_env", "parse_families", "parse_sweep",
]
