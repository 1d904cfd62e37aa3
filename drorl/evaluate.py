"""Batched policy evaluation: rollouts, normalised scores and dynamics-perturbation sweeps.

A batched policy maps observations ``[S, N, obs_dim]`` (float32; ``S`` policies, e.g. training
seeds, each facing ``N`` envs) to actions ``[S, N, act_dim]``, so a compiled policy runs once per
env step for every env at once. Episode ``e`` of every policy and every perturbation starts from
the reset seed ``episode_seeds(seed, E)[e]``: policies and grid values are compared on the same
initial states (common random numbers), and a grid point's result does not depend on which
other points are evaluated alongside it.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from drorl.envs import (
    AnyPerturbation,
    CombinedPerturbation,
    Perturbation,
    PerturbedEnv,
    default_grid,
    get_task,
    make_env,
    parse_sweep,
)
from drorl.envs.batched import BATCHED_TASKS, BatchedMujocoEnvs
from drorl.envs.tasks import TaskInfo
from drorl.errors import DrorlError
from drorl.io_utils import write_json_atomic
from drorl.progress import progress_bar
from drorl.scores import normalized_score

BatchedPolicy = Callable[[np.ndarray], np.ndarray]
SinglePolicy = Callable[[np.ndarray], np.ndarray]
Starts = list[tuple[AnyPerturbation | None, int]]  # (perturbation, reset seed) of each episode in a chunk
ChunkRunner = Callable[[BatchedPolicy, Starts, int | None, Callable[[int], None]], np.ndarray]

DEFAULT_MAX_ENVS = 512  # envs alive at once; more work runs in chunks through the same env pool


def episode_seeds(seed: int, episodes: int) -> list[int]:
    """The reset seed of each episode index, derived from ``seed`` (episode ``e``'s seed ignores ``episodes``)."""
    return [int(np.random.SeedSequence([seed, e]).generate_state(1)[0]) for e in range(episodes)]


def robustness_summary(values: Sequence[float], normalized_means: Sequence[float]) -> dict[str, float]:
    """Summarise a robustness curve: ``auc`` is the mean normalised return over the grid, ``worst`` its minimum."""
    if len(values) == 0 or len(values) != len(normalized_means):
        raise ValueError(f"a robustness curve needs one score per grid value; got {len(values)} values "
                         f"and {len(normalized_means)} scores")
    return {"auc": float(np.mean(normalized_means)), "worst": float(np.min(normalized_means))}


def _batch_width(jobs: int, num_policies: int, max_envs: int) -> int:
    """Envs per policy in one chunk: as many as fit in ``max_envs``, balanced so the last chunk is full-ish."""
    chunks = math.ceil(jobs / max(1, max_envs // num_policies))
    return math.ceil(jobs / chunks)


def _policy_actions(policy_fn: BatchedPolicy, obs: np.ndarray, act_dim: int) -> np.ndarray:
    """Call the batched policy and check that it returned one action per observation."""
    actions = np.asarray(policy_fn(obs), dtype=np.float32)
    expected = obs.shape[:2] + (act_dim,)
    if actions.shape != expected:
        raise ValueError(f"policy returned actions of shape {actions.shape}, expected {expected}")
    return actions


def _run_chunk(
    policy_fn: BatchedPolicy, envs: list[list[PerturbedEnv]], info: TaskInfo,
    starts: Starts, max_steps: int | None, advance: Callable[[int], None],
) -> np.ndarray:
    """Run one episode per (perturbation, reset seed) in ``starts`` on every policy; returns ``[S, len(starts)]``.

    ``envs[s][n]`` serves policy ``s`` and slot ``n``; slots past ``len(starts)`` stay idle. A finished
    env keeps its last observation in the batch and is not stepped again.
    """
    num_policies, width = len(envs), len(envs[0])
    obs = np.zeros((num_policies, width, info.obs_dim), dtype=np.float32)
    active = np.zeros((num_policies, width), dtype=bool)
    totals = np.zeros((num_policies, width))
    for s, row in enumerate(envs):
        for n, (perturbation, reset_seed) in enumerate(starts):
            row[n].set_perturbation(perturbation)
            obs[s, n] = row[n].reset(seed=reset_seed)[0]
            active[s, n] = True
    steps = 0
    while active.any():
        actions = _policy_actions(policy_fn, obs, info.act_dim)
        steps += 1
        for s, n in zip(*np.nonzero(active)):
            next_obs, reward, terminated, truncated, _ = envs[s][n].step(actions[s, n])
            obs[s, n] = next_obs
            totals[s, n] += float(reward)
            if terminated or truncated or (max_steps is not None and steps >= max_steps):
                active[s, n] = False
                advance(1)
    return totals[:, : len(starts)]


def _run_batched_chunk(
    policy_fn: BatchedPolicy, envs: BatchedMujocoEnvs, num_policies: int, info: TaskInfo,
    starts: Starts, max_steps: int | None, advance: Callable[[int], None],
) -> np.ndarray:
    """``_run_chunk`` on batched physics: slot ``s * width + n`` of ``envs`` serves policy ``s`` and slot ``n``."""
    width = envs.num_envs // num_policies
    active = np.arange(envs.num_envs) % width < len(starts)  # slots past len(starts) stay idle
    envs.set_perturbations([starts[i % width][0] if active[i] else None for i in range(envs.num_envs)])
    ids = np.flatnonzero(active)
    obs = np.zeros((envs.num_envs, info.obs_dim), dtype=np.float32)
    obs[ids] = envs.reset(ids, [starts[i % width][1] for i in ids])
    totals = np.zeros(envs.num_envs)
    steps = 0
    while active.any():
        actions = _policy_actions(policy_fn, obs.reshape(num_policies, width, -1), info.act_dim)
        steps += 1
        ids = np.flatnonzero(active)
        obs[ids], rewards, terminated, truncated = envs.step(ids, actions.reshape(envs.num_envs, -1)[ids])
        totals[ids] += rewards
        finished = ids[terminated | truncated | (max_steps is not None and steps >= max_steps)]
        active[finished] = False
        if finished.size:
            advance(len(finished))
    return totals.reshape(num_policies, width)[:, : len(starts)]


@contextlib.contextmanager
def _gymnasium_runner(info: TaskInfo, num_policies: int, width: int) -> Iterator[ChunkRunner]:
    """A chunk runner over ``num_policies x width`` Gymnasium envs, every one closed on exit."""
    with contextlib.ExitStack() as stack:
        envs = [[stack.enter_context(contextlib.closing(make_env(info))) for _ in range(width)]
                for _ in range(num_policies)]
        yield lambda policy_fn, starts, max_steps, advance: _run_chunk(
            policy_fn, envs, info, starts, max_steps, advance)


@contextlib.contextmanager
def _batched_runner(info: TaskInfo, num_policies: int, width: int) -> Iterator[ChunkRunner]:
    """A chunk runner over ``num_policies x width`` envs of batched MuJoCo physics built from one task env."""
    with contextlib.closing(make_env(info)) as template:
        envs = BatchedMujocoEnvs(template, num_policies * width)
    yield lambda policy_fn, starts, max_steps, advance: _run_batched_chunk(
        policy_fn, envs, num_policies, info, starts, max_steps, advance)


def run_episodes(
    policy_fn: BatchedPolicy,
    num_policies: int,
    task: str | TaskInfo,
    perturbations: Sequence[AnyPerturbation | None],
    episodes: int,
    seed: int = 0,
    progress: bool = False,
    max_steps: int | None = None,
    max_envs: int = DEFAULT_MAX_ENVS,
) -> np.ndarray:
    """Returns ``[S, P, E]`` of ``episodes`` episodes per policy and perturbation (``None``: nominal).

    All envs step together with one ``policy_fn`` call per step. At most ``max_envs`` envs exist at
    once: more work runs in chunks of equal batch width through the same env pool, so a compiled
    policy sees one shape. ``max_steps`` caps episode length (truncation). MuJoCo tasks
    (``BATCHED_TASKS``) step on batched physics (``BatchedMujocoEnvs``), which gives the same episodes
    as Gymnasium envs; other tasks step Gymnasium envs, every one closed (restoring its nominal
    dynamics) even if the policy raises.
    """
    info = get_task(task)
    if num_policies < 1 or episodes < 1 or not perturbations:
        raise ValueError(f"need at least one policy, episode and perturbation; got {num_policies}, "
                         f"{episodes} and {len(perturbations)}")
    seeds = episode_seeds(seed, episodes)
    jobs = [(p, e) for p in range(len(perturbations)) for e in range(episodes)]
    width = _batch_width(len(jobs), num_policies, max_envs)
    returns = np.zeros((num_policies, len(perturbations), episodes))
    open_runner = _batched_runner if info.name in BATCHED_TASKS else _gymnasium_runner
    description = f"evaluating {info.name} ({num_policies} x {len(jobs)} episodes)"
    with (open_runner(info, num_policies, width) as run_chunk,
          progress_bar(description, num_policies * len(jobs), enabled=progress, unit="episodes") as advance):
        for first in range(0, len(jobs), width):
            chunk = jobs[first:first + width]
            chunk_returns = run_chunk(policy_fn, [(perturbations[p], seeds[e]) for p, e in chunk], max_steps, advance)
            for n, (p, e) in enumerate(chunk):
                returns[:, p, e] = chunk_returns[:, n]
    return returns


def run_episodes_one_env(
    policy_fn_single: SinglePolicy,
    task: str | TaskInfo,
    perturbation: AnyPerturbation | None,
    episodes: int,
    seed: int = 0,
    max_steps: int | None = None,
    gamma: float = 1.0,
) -> np.ndarray:
    """Returns ``[E]``: the naive loop, one env and one policy call per step (the throughput baseline,
    and the Monte-Carlo check of off-policy evaluation: returns are sum_t gamma^t r_t).

    ``policy_fn_single`` maps one observation ``[obs_dim]`` (float32) to one action ``[act_dim]``.
    Episodes use the same reset seeds as ``run_episodes``, so the two agree for a deterministic policy.
    """
    env = make_env(task, perturbation)
    returns = np.zeros(episodes)
    try:
        for e, reset_seed in enumerate(episode_seeds(seed, episodes)):
            obs, _ = env.reset(seed=reset_seed)
            done, steps, discount = False, 0, 1.0
            while not done:
                action = np.asarray(policy_fn_single(np.asarray(obs, dtype=np.float32)), dtype=np.float32)
                obs, reward, terminated, truncated, _ = env.step(action)
                returns[e] += discount * float(reward)
                discount *= gamma
                steps += 1
                done = terminated or truncated or (max_steps is not None and steps >= max_steps)
    finally:
        env.close()
    return returns


def _reference(info: TaskInfo, ref_min: float | None, ref_max: float | None, source: str | None) -> dict:
    """The eval.json ``reference`` entry: given returns, or the task's D4RL constants when none are given."""
    if ref_min is None and ref_max is None:
        if info.d4rl_ref_min is None or info.d4rl_ref_max is None:
            raise DrorlError(f"task {info.name!r} has no D4RL reference returns; pass ref_min and ref_max")
        ref_min, ref_max, source = info.d4rl_ref_min, info.d4rl_ref_max, source or "d4rl"
    if ref_min is None or ref_max is None or not ref_max > ref_min:
        raise DrorlError(f"reference returns must satisfy ref_min < ref_max; got {ref_min} and {ref_max}")
    return {"min": float(ref_min), "max": float(ref_max), "source": source or "given"}


def _point_stats(returns: np.ndarray, reference: Mapping[str, float]) -> dict:
    """eval.json statistics of one grid point from its returns ``[S, E]``."""
    mean = float(returns.mean())
    return {
        "return_mean": mean,
        "return_std": float(returns.std()),
        "normalized_mean": normalized_score(mean, reference["min"], reference["max"]),
        "per_seed": [float(r) for r in returns.mean(axis=1)],
    }


def sweep_grids(
    task: str | TaskInfo, families: Sequence[str] | str, grids: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, list[float]]:
    """Each family's values: its ``FAMILY=LO:HI:N`` range in ``families`` (a ``parse_sweep`` spec, or
    a sequence of its items), else its entry in ``grids``, else the task's ``default_grid``."""
    spec = parse_sweep(families if isinstance(families, str) else ",".join(families)) if families else {}
    values = {}
    for name, given in spec.items():
        if given is None:
            given = (grids or {}).get(name, default_grid(task, name))
        if not given:
            raise DrorlError(f"sweep grid for {name!r} is empty")
        values[name] = [float(v) for v in given]
    return values


def _grid2d_cells(values: Mapping[str, list[float]]) -> list[CombinedPerturbation]:
    """Every pair of the two families' values, both applied together, the first family's values outermost."""
    if len(values) != 2:
        raise DrorlError(f"--grid2d needs exactly two perturbation families in --sweep; got {len(values)} "
                         f"({', '.join(values) or 'none'})")
    (rows_family, rows), (columns_family, columns) = values.items()
    return [CombinedPerturbation((Perturbation(rows_family, a), Perturbation(columns_family, b)))
            for a in rows for b in columns]


def _grid2d_entry(values: Mapping[str, list[float]], cell_stats: list[dict]) -> dict:
    """eval.json's ``grid2d``: the two families, their values and the statistics of every cell as rows
    (first family) of columns (second family), from the cells' statistics in ``_grid2d_cells`` order."""
    columns = len(list(values.values())[1])
    return {"families": list(values), "values": list(values.values()),
            "cells": [cell_stats[i:i + columns] for i in range(0, len(cell_stats), columns)]}


def evaluate_sweeps(
    policy_fn: BatchedPolicy,
    num_policies: int,
    task: str | TaskInfo,
    families: Sequence[str] | str,
    episodes: int,
    seed: int = 0,
    ref_min: float | None = None,
    ref_max: float | None = None,
    grids: Mapping[str, Sequence[float]] | None = None,
    progress: bool = True,
    reference_source: str | None = None,
    max_steps: int | None = None,
    grid2d: bool = False,
) -> dict:
    """Evaluate at nominal dynamics and along each family's grid; returns the eval.json content.

    ``families``: a sweep spec (``"gravity=-0.3:0.3:7,damping"``, see ``parse_sweep``) or a
    sequence of its items (empty: nominal only); ``grids`` overrides ``default_grid`` for a bare
    family. ``grid2d``: instead of one sweep per family, the product grid of exactly two families,
    both perturbations applied together in every cell, under the key ``grid2d`` (``sweeps`` stays
    empty): ``families``, ``values`` (the two grids) and ``cells[i][j]`` (first family's ``i``-th
    value, second's ``j``-th). ``ref_min``/``ref_max`` default to the task's D4RL constants (source
    ``"d4rl"``); given ones are labelled ``reference_source`` (default ``"given"``). Nominal and
    every grid point run in a single batched ``run_episodes`` call.
    """
    info = get_task(task)
    reference = _reference(info, ref_min, ref_max, reference_source)
    sweep_values = sweep_grids(info, families, grids)
    if grid2d:
        points: list[AnyPerturbation] = list(_grid2d_cells(sweep_values))
    else:
        points = [Perturbation(name, v) for name, values in sweep_values.items() for v in values]
    returns = run_episodes(policy_fn, num_policies, info, [None, *points], episodes, seed, progress, max_steps)
    result = {
        "env": info.name,
        "episodes": episodes,
        "reference": reference,
        "nominal": _point_stats(returns[:, 0], reference),
        "sweeps": {},
        "summary": {},
    }
    if grid2d:
        result["grid2d"] = _grid2d_entry(sweep_values, [_point_stats(returns[:, 1 + i], reference)
                                                        for i in range(len(points))])
        return result
    first = 1  # column 0 of returns is nominal
    for name, values in sweep_values.items():
        result["sweeps"][name] = [{"value": v, **_point_stats(returns[:, first + i], reference)}
                                  for i, v in enumerate(values)]
        result["summary"][name] = robustness_summary(values, [p["normalized_mean"] for p in result["sweeps"][name]])
        first += len(values)
    return result


def write_eval_json(path: str | os.PathLike, result: Mapping) -> None:
    """Write an ``evaluate_sweeps`` result to ``path`` atomically (never a half-written file)."""
    write_json_atomic(path, result)
