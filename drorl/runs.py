"""Glue between the CLI and the library: start or resume a training run, evaluate a run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from drorl import algos
from drorl.algos.base import config_with_overrides
from drorl.data.dataset import Dataset
from drorl.data.generate import reference_returns
from drorl.data.registry import data_dir, resolve
from drorl.envs import get_task
from drorl.errors import DrorlError
from drorl.health import run_warnings
from drorl.scores import normalized_score, reference_scores, spec_for, task_of
from drorl.train import RunSettings, load_states, policy_fn, train


def nominal_evaluator(task: str, episodes: int, ref: tuple[float, float, str],
                      seed: int = 0) -> Callable[[Callable, int], dict[str, np.ndarray]]:
    from drorl.evaluate import run_episodes

    def evaluate(policy: Callable, num_policies: int) -> dict[str, np.ndarray]:
        returns = run_episodes(policy, num_policies, task, [None], episodes, seed=seed)[:, 0, :]
        means = returns.mean(axis=1)
        return {"eval/return": means, "eval/normalized": normalized_score(means, ref[0], ref[1])}

    return evaluate


def run_training(algo_name: str, dataset_id: str, *, env: str | None, steps: int, seeds: tuple[int, ...],
                 out: Path | None, eval_every: int, eval_episodes: int, log_every: int,
                 checkpoint_every: int, overrides: dict[str, str], progress: bool = True,
                 loggers: tuple[str, ...] = ()) -> Path:
    algo = algos.get(algo_name, "offline")
    config = config_with_overrides(algo.Config, overrides)
    dataset, name, _ = resolve(dataset_id, progress=progress)
    task = task_of(dataset, env, name)
    if eval_every > 0 and task is None:
        raise DrorlError("--eval-every needs a task: pass --env (the dataset's metadata names none)")
    evaluator = None
    if eval_every > 0:
        evaluator = nominal_evaluator(task, eval_episodes, reference_scores(dataset.metadata, task))
    out = out or Path("runs") / f"{algo_name}-{Path(name).stem}"
    settings = RunSettings(steps=steps, seeds=seeds, updates_per_call=log_every,
                           checkpoint_every=checkpoint_every, eval_every=eval_every,
                           eval_episodes=eval_episodes, env=task)
    _, run_dir = train(algo_name, dataset, out, settings, config=config, spec=spec_for(dataset, task),
                       dataset_id=name, evaluator=evaluator, progress=progress, prepared_dir=dynamics_cache(),
                       loggers=loggers)
    return run_dir


def dynamics_cache() -> Path:
    """Where ``drorl train`` and ``drorl train-dynamics`` keep dynamics ensembles: $DRORL_DATA/dynamics."""
    return data_dir() / "dynamics"


def train_dynamics(dataset_id: str, *, seed: int, overrides: dict[str, str], cache: Path | None = None,
                   progress: bool = True) -> tuple[dict[str, Any], Path]:
    """Train (or find in the cache) the dynamics ensemble of a dataset: its training report and file.

    The cache is the one ``drorl train`` reads, so a model-based run with the same seed
    (``--set model.model_seed``) and dynamics config (``--set model.dynamics.FIELD``) reuses it.
    """
    from drorl.nn import dynamics

    config = config_with_overrides(dynamics.Config, overrides)
    dataset, _, _ = resolve(dataset_id, progress=progress)
    _, report, path = dynamics.cached(config, dataset, seed, cache or dynamics_cache(), progress)
    return report, path


def evaluate_run(run_dir: str | Path, sweep: str, *, episodes: int, env: str | None = None, seed: int = 0,
                 out: Path | None = None, progress: bool = True) -> dict[str, Any]:
    from drorl.envs.perturbations import parse_families
    from drorl.evaluate import evaluate_sweeps, write_eval_json

    run_dir = Path(run_dir)
    algo, record, states = load_states(run_dir)
    task = get_task(env or record.get("env") or "").name if (env or record.get("env")) else None
    if task is None:
        raise DrorlError(f"{run_dir}/config.json names no task; pass --env")
    families = parse_families(sweep) if sweep else []
    ref_min, ref_max, source = reference_scores(record["dataset"].get("metadata", {}), task)
    result = evaluate_sweeps(policy_fn(algo, states), len(record["seeds"]), task, families, episodes,
                             seed=seed, ref_min=ref_min, ref_max=ref_max, reference_source=source, progress=progress)
    result["algorithm"] = record["algorithm"]
    result["seeds"] = record["seeds"]
    result["health_warnings"] = run_warnings(run_dir)
    write_eval_json(out or run_dir / "eval.json", result)
    return json.loads(json.dumps(result))


def evaluate_zoo_policy(policy_id: str, sweep: str, *, episodes: int, seed: int = 0, out: Path,
                        progress: bool = True) -> dict[str, Any]:
    """Evaluate a zoo policy the way its manifest return was measured (stochastic actions)."""
    from drorl import zoo
    from drorl.envs.perturbations import parse_families
    from drorl.evaluate import evaluate_sweeps, write_eval_json

    entry = zoo.get(policy_id)
    policy = zoo.load_policy(policy_id, stochastic=True, seed=seed)
    families = parse_families(sweep) if sweep else []
    ref = reference_returns(entry.task)
    result = evaluate_sweeps(lambda obs: policy(obs[0])[None], 1, entry.task, families, episodes, seed=seed,
                             ref_min=ref["ref_min_score"], ref_max=ref["ref_max_score"],
                             reference_source=ref["ref_source"], progress=progress)
    result["policy"] = policy_id
    result["manifest_return"] = {"mean": entry.return_mean, "std": entry.return_std}
    write_eval_json(out, result)
    return json.loads(json.dumps(result))


def off_policy_evaluation(run_dir: str | Path, dataset_id: str, *, steps: int, gamma: float, seed_index: int = 0,
                          rollouts: int = 0, progress: bool = True) -> dict[str, Any]:
    """DualDICE's estimate of a run's policy value (one of its seeds) from a dataset, and, with ``rollouts``,
    the Monte-Carlo discounted return of the policy in the run's task for comparison."""
    import jax

    from drorl.algos import dualdice
    from drorl.evaluate import run_episodes_one_env
    from drorl.ope import estimate_policy_value

    algo, record, states = load_states(Path(run_dir))
    if not 0 <= seed_index < len(record["seeds"]):
        raise DrorlError(f"--seed-index {seed_index}: the run has {len(record['seeds'])} seeds")
    state = jax.tree_util.tree_map(lambda x: x[seed_index], states)
    dataset, name, _ = resolve(dataset_id, progress=progress)
    task = record.get("env")
    config = dualdice.Config(gamma=gamma)
    value, _ = estimate_policy_value(dataset, lambda obs, key: algo.act(state, obs, key, True), config,
                                              steps=steps, spec=spec_for(dataset, task), progress=progress)
    result: dict[str, Any] = {"run": str(run_dir), "dataset": name, "gamma": gamma, "dualdice_value": value}
    if rollouts > 0:
        if task is None:
            raise DrorlError(f"{run_dir}/config.json names no task to roll the policy out in")
        act = jax.jit(lambda obs: algo.act(state, obs[None], jax.random.PRNGKey(0), True)[0])
        mc = run_episodes_one_env(lambda obs: np.asarray(act(obs)), task, None, rollouts, gamma=gamma)
        result.update(monte_carlo_value=float(mc.mean()), monte_carlo_std=float(mc.std()), rollouts=rollouts)
    return result
