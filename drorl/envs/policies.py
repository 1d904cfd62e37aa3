"""Behaviour policies that need no training: uniform random actions, and Gaussian noise on another
policy's actions. A ``BatchPolicy`` maps observations [N, obs_dim] to actions [N, act_dim] (numpy)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from drorl.envs import action_bounds, get_task

BatchPolicy = Callable[[np.ndarray], np.ndarray]


def random_policy(task: str, seed: int) -> BatchPolicy:
    """Uniform actions over the task's action box (or its discrete actions), from a seeded generator."""
    info = get_task(task)
    rng = np.random.default_rng(seed)
    if info.discrete:
        return lambda obs: rng.integers(info.num_actions, size=(obs.shape[0], 1)).astype(np.float32)
    low, high = action_bounds(info)
    return lambda obs: rng.uniform(low, high, size=(obs.shape[0], low.shape[0])).astype(np.float32)


def with_noise(policy: BatchPolicy, std: float, low: np.ndarray, high: np.ndarray, seed: int) -> BatchPolicy:
    """``clip(policy(s) + N(0, std^2 I))`` with a seeded generator."""
    rng = np.random.default_rng([seed, 0x6E6F])

    def noisy(obs: np.ndarray) -> np.ndarray:
        action = policy(obs)
        return np.clip(action + rng.normal(0.0, std, action.shape), low, high).astype(np.float32)

    return noisy
