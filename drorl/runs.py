"""What the CLI's commands do, as functions with the same defaults: start or resume a training run, evaluate a
run directory (or a zoo policy) under a sweep spec, train a dynamics ensemble, off-policy evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

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


def run_training(algo_name: str, dataset_id: str, *, env: str | None = None, steps: int = 100_000,
                 seeds: Sequence[int] = (0,), out: str | Path | None = None, eval_every: int = 0,
                 eval_episodes: int = 5, log_every: int = 1000, checkpoint_every: int = 10_000,
                 overrides: Mapping[str, Any] | None = None, progress: bool = True,
                 loggers: str | Sequence[str] = "jsonl") -> Path:
    """What ``drorl train`` does, with its defaults: train the offline algorithm ``algo_name`` on a dataset
    (a name, generated on first use, or an HDF5 path) for every seed at once, into ``out`` (default
    runs/ALGO-DATASET; an existing run there resumes). ``overrides``: config fields as ``--set`` takes them
    (``{"policy.lr": 3e-4}``; text is read as the command line reads it). ``loggers``: names or
    comma-separated text, as ``--logger``. Returns the run directory."""
    from drorl.loggers import parse_loggers
    from drorl.sweep import as_text

    if steps <= 0 or log_every <= 0 or checkpoint_every <= 0 or eval_every < 0:
        raise DrorlError("--steps, --log-every and --checkpoint-every must be positive, --eval-every >= 0")
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise DrorlError(f"--seeds {','.join(map(str, seeds))}: expected distinct integers such as 0,1,2")
    algo = algos.get(algo_name, "offline")
    config = config_with_overrides(algo.Config, {key: as_text(value) for key, value in (overrides or {}).items()})
    names = parse_loggers(loggers if isinstance(loggers, str) else ",".join(loggers))
    dataset, name, _ = resolve(dataset_id, progress=progress)
    task = task_of(dataset, env, name)
    if eval_every > 0 and task is None:
        raise DrorlError("--eval-every needs a task: pass --env (the dataset's metadata names none)")
    evaluator = None
    if eval_every > 0:
        evaluator = nominal_evaluator(task, eval_episodes, reference_scores(dataset.metadata, task))
    out = Path(out) if out else Path("runs") / f"{algo_name}-{Path(name).stem}"
    settings = RunSettings(steps=steps, seeds=seeds, updates_per_call=log_every,
                           checkpoint_every=checkpoint_every, eval_every=eval_every,
                           eval_episodes=eval_episodes, env=task)
    _, run_dir = train(algo_name, dataset, out, settings, config=config, spec=spec_for(dataset, task),
                       dataset_id=name, evaluator=evaluator, progress=progress, prepared_dir=dynamics_cache(),
                       loggers=names)
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


ZOO_PREFIX = "zoo:"


def default_eval_path(target: str | Path) -> Path:
    """Where ``evaluate_run(target)`` writes eval.json by default: RUN_DIR/eval.json, or
    runs/zoo/POLICY_ID/eval.json for ``zoo:POLICY_ID``."""
    if str(target).startswith(ZOO_PREFIX):
        return Path("runs") / "zoo" / str(target)[len(ZOO_PREFIX):] / "eval.json"
    return Path(target) / "eval.json"


def heat_map_path(eval_path: str | Path) -> Path:
    """The heat map of a two-family grid, beside its eval.json: ``eval.json`` -> ``eval_grid2d.png``."""
    eval_path = Path(eval_path)
    return eval_path.with_name(f"{eval_path.stem}_grid2d.png")


def write_evaluation(result: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """Write eval.json to ``out`` (and the two-family grid's heat map beside it); returns the result as
    read back from JSON."""
    from drorl.evaluate import write_eval_json

    write_eval_json(out, result)
    if "grid2d" in result:
        from drorl.plot import plot_grid2d

        plot_grid2d(result, heat_map_path(out))
    return json.loads(json.dumps(result))


def evaluate_run(target: str | Path, sweep: str = "", *, episodes: int = 10, env: str | None = None, seed: int = 0,
                 out: str | Path | None = None, grid2d: bool = False, progress: bool = True) -> dict[str, Any]:
    """What ``drorl evaluate`` does, with its defaults: evaluate a run directory written by ``run_training``
    (or the zoo policy ``zoo:POLICY_ID``) nominally and along the sweep spec ``sweep``
    (``"gravity=-0.3:0.3:7,damping"``: ``drorl.envs.perturbations.parse_sweep``), on the run's task (or
    ``env``); with ``grid2d``, on the product grid of the spec's two families instead. Writes eval.json to
    ``out`` (default ``default_eval_path(target)``), and the grid's heat map beside it (``heat_map_path``);
    returns the eval.json content."""
    from drorl.evaluate import evaluate_sweeps

    if episodes <= 0:
        raise DrorlError(f"--episodes {episodes}: expected a positive number")
    out = Path(out) if out else default_eval_path(target)
    if str(target).startswith(ZOO_PREFIX):
        return evaluate_zoo_policy(str(target)[len(ZOO_PREFIX):], sweep, episodes=episodes, seed=seed, out=out,
                                   grid2d=grid2d, progress=progress)
    run_dir = Path(target)
    algo, record, states = load_states(run_dir)
    task = get_task(env or record.get("env") or "").name if (env or record.get("env")) else None
    if task is None:
        raise DrorlError(f"{run_dir}/config.json names no task; pass --env")
    ref_min, ref_max, source = reference_scores(record["dataset"].get("metadata", {}), task)
    result = evaluate_sweeps(policy_fn(algo, states), len(record["seeds"]), task, sweep, episodes, seed=seed,
                             ref_min=ref_min, ref_max=ref_max, reference_source=source, progress=progress,
                             grid2d=grid2d)
    result["algorithm"] = record["algorithm"]
    result["seeds"] = record["seeds"]
    result["health_warnings"] = run_warnings(run_dir)
    return write_evaluation(result, out)


def evaluate_zoo_policy(policy_id: str, sweep: str, *, episodes: int, seed: int = 0, out: str | Path,
                        grid2d: bool = False, progress: bool = True) -> dict[str, Any]:
    """Evaluate a zoo policy the way its manifest return was measured (stochastic actions)."""
    from drorl import zoo
    from drorl.evaluate import evaluate_sweeps

    entry = zoo.get(policy_id)
    policy = zoo.load_policy(policy_id, stochastic=True, seed=seed)
    ref = reference_returns(entry.task)
    result = evaluate_sweeps(lambda obs: policy(obs[0])[None], 1, entry.task, sweep, episodes, seed=seed,
                             ref_min=ref["ref_min_score"], ref_max=ref["ref_max_score"],
                             reference_source=ref["ref_source"], progress=progress, grid2d=grid2d)
    result["policy"] = policy_id
    result["manifest_return"] = {"mean": entry.return_mean, "std": entry.return_std}
    return write_evaluation(result, out)


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
