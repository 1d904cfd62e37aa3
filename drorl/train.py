"""The one offline training loop.

The dataset lives on the device; each compiled call samples K batches inside the program and runs
K updates in a ``lax.scan``, for S seeds at once under ``vmap``. Between calls the loop logs metrics,
writes checkpoints and evaluates. A run killed at any point and started again with the same output
directory resumes from its latest checkpoint and ends with the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import drorl
from drorl import algos, checkpoint, health
from drorl.algos.base import Spec, config_from_dict
from drorl.data.dataset import Dataset
from drorl.data.sampling import device_arrays, uniform_batch
from drorl.errors import DrorlError
from drorl.io_utils import atomic_path, write_json_atomic
from drorl.loggers import metric_loggers
from drorl.progress import progress_bar
from drorl.scores import spec_for, task_of


device_data = device_arrays


def batch_sampler(algo: ModuleType) -> Callable:
    """``(data, state, key) -> batch``: the algorithm's own ``sample`` when it has one, else uniform rows,
    ``state.config.batch_size`` of them."""
    own = getattr(algo, "sample", None)
    if own is not None:
        return own
    return lambda data, state, key: uniform_batch(data, key, state.config.batch_size)


def scan_updates(algo: ModuleType, sample: Callable, state: Any, rng: jax.Array, data: Any, num_updates: int
                 ) -> tuple[Any, jax.Array, dict]:
    """The one scan body of every loop: ``num_updates`` times split the key, draw
    ``sample(data, state, key)`` and apply ``algo.update``; metrics are averaged over the updates."""

    def body(carry, _):
        state, rng = carry
        rng, k_batch, k_update = jax.random.split(rng, 3)
        state, metrics = algo.update(state, sample(data, state, k_batch), k_update)
        return (state, rng), metrics

    (state, rng), metrics = jax.lax.scan(body, (state, rng), None, length=num_updates)
    return state, rng, jax.tree_util.tree_map(jnp.mean, metrics)


def make_train_chunk(algo: ModuleType, num_updates: int) -> Callable:
    """A compiled ``(states, rngs, data) -> (states, rngs, metrics)`` doing ``num_updates`` steps per seed.

    ``states`` and ``rngs`` carry a leading seed axis; metrics are averaged over the chunk.
    """
    sample = batch_sampler(algo)

    def one_seed(state, rng, data):
        return scan_updates(algo, sample, state, rng, data, num_updates)

    return jax.jit(jax.vmap(one_seed, in_axes=(0, 0, None)), donate_argnums=(0, 1))


def init_states(algo: ModuleType, config: Any, spec: Spec, seeds: list[int]) -> tuple[Any, jax.Array]:
    """Per-seed initial states and training RNG keys, stacked on a leading seed axis."""
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    init_keys, train_keys = jax.vmap(lambda k: tuple(jax.random.split(k)))(keys)
    states = jax.vmap(lambda k: algo.init(config, spec, k))(init_keys)
    return states, train_keys


def policy_fn(algo: ModuleType, states: Any, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Batched deterministic policy for evaluation: obs [S, N, obs_dim] -> actions [S, N, act_dim].

    Each call and each of the S policies gets its own key (``seed``, the call's index and the policy's
    index folded in), for algorithms whose "deterministic" acting still samples (BCQ's candidates).
    """
    acting = jax.jit(jax.vmap(lambda st, obs, key: algo.act(st, obs, key, True)))
    num_policies = jax.tree_util.tree_leaves(states)[0].shape[0]
    calls = itertools.count()

    def act(obs: np.ndarray) -> np.ndarray:
        keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), next(calls)), num_policies)
        return np.asarray(acting(states, jnp.asarray(obs, jnp.float32), keys))

    return act


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How long and how a run trains; saved in config.json."""

    steps: int
    seeds: tuple[int, ...] = (0,)
    updates_per_call: int = 1000
    checkpoint_every: int = 10_000
    eval_every: int = 0
    eval_episodes: int = 5
    env: str | None = None


def _run_record(algo_name: str, config: Any, spec: Spec, settings: RunSettings, dataset: Dataset,
                dataset_id: str) -> dict[str, Any]:
    return {
        "algorithm": algo_name,
        "config": dataclasses.asdict(config),
        "dataset": {"id": dataset_id, "hash": dataset.content_hash(), "transitions": len(dataset),
                    "metadata": dataset.metadata},
        "env": settings.env,
        "seeds": list(settings.seeds),
        "steps": settings.steps,
        "updates_per_call": settings.updates_per_call,
        "checkpoint_every": settings.checkpoint_every,
        "spec": {"obs_dim": spec.obs_dim, "act_dim": spec.act_dim,
                 "action_low": spec.action_low.tolist(), "action_high": spec.action_high.tolist(),
                 "task": spec.task, "num_actions": spec.num_actions},
        "drorl_version": drorl.__version__,
    }


_MUST_MATCH = ("algorithm", "config", "seeds", "updates_per_call", "spec", "dataset.hash")


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only complete metric lines up to ``last_step`` (a killed run may have logged past it)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("step", 0) <= last_step:
            kept.append(line)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in kept))


def last_good_checkpoint(directory: Path) -> str:
    """What a stopped run leaves to resume from, for its error message."""
    latest = checkpoint.latest(directory)
    return f"the last good checkpoint is {latest}" if latest else "no checkpoint was written before it"


def report_warnings(warnings: list[dict[str, Any]]) -> None:
    for warning in warnings:
        print(f"drorl: {health.describe(warning)}", file=sys.stderr)


def _chunk_boundaries(start: int, steps: int, per_call: int) -> list[int]:
    ends = list(range(per_call, steps + 1, per_call))
    if not ends or ends[-1] != steps:
        ends.append(steps)
    return [e for e in ends if e > start]


def train(algo_name: str, dataset: Dataset, out_dir: str | Path, settings: RunSettings,
          config: Any = None, spec: Spec | None = None, dataset_id: str = "dataset",
          evaluator: Callable[[Callable, int], dict[str, Any]] | None = None,
          progress: bool = True, description: str | None = None,
          prepared_dir: str | Path | None = None, loggers: Sequence[str] = ()) -> tuple[Any, Path]:
    """Train ``algo_name`` on ``dataset`` for every seed; resumes when ``out_dir`` holds this run.

    ``description`` labels the progress bar (default: algorithm, dataset and number of seeds). An
    algorithm with a ``prepare`` step (a dynamics ensemble) caches its result in ``prepared_dir``
    (default: the run directory), where a restarted run or another algorithm finds it.
    ``evaluator(policy_fn, num_policies) -> {metric: [value per seed]}`` runs every
    ``settings.eval_every`` steps when given. Metrics go to metrics.jsonl and to the ``loggers`` named
    (``drorl.loggers``: tensorboard, wandb). Returns the final stacked states and the run directory.
    """
    algo = algos.get(algo_name, "offline")
    config = config if config is not None else algo.Config()
    spec = spec if spec is not None else spec_for(dataset, task_of(dataset, settings.env))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = _run_record(algo_name, config, spec, settings, dataset, dataset_id)
    config_path = out / "config.json"
    if config_path.exists():
        checkpoint.require_same_run(config_path, json.loads(config_path.read_text()), record, _MUST_MATCH,
                                    defaults={"config": dataclasses.asdict(algo.Config())})
    write_json_atomic(config_path, record)

    prepare = getattr(algo, "prepare", None)
    if prepare is not None:
        spec = prepare(config, dataset, spec, Path(prepared_dir or out), progress)
    seeds = list(settings.seeds)
    states, rngs = init_states(algo, config, spec, seeds)
    step = 0
    ckpt_dir = out / "checkpoints"
    latest = checkpoint.latest(ckpt_dir)
    if latest is not None:
        step, (states, rngs) = checkpoint.load(latest, (states, rngs))
        states, rngs = jax.tree_util.tree_map(jnp.asarray, (states, rngs))
    metrics_path = out / "metrics.jsonl"
    truncate_metrics(metrics_path, step)
    monitor = health.Monitor(getattr(algo, "DIAGNOSTICS", {}))
    monitor.load(health.read_records(metrics_path))

    data = device_data(dataset)
    per_call = max(1, min(settings.updates_per_call, settings.steps))
    chunk_fns: dict[int, Callable] = {}
    description = description or f"{algo_name} on {dataset_id} x{len(seeds)} seeds"
    with progress_bar(description, total=settings.steps, completed=step, enabled=progress, unit="updates"
                      ) as advance, metric_loggers(loggers, out, seeds, record, step) as log:
        for end in _chunk_boundaries(step, settings.steps, per_call):
            n = end - step
            if n not in chunk_fns:
                chunk_fns[n] = make_train_chunk(algo, n)
            t0 = time.perf_counter()
            states, rngs, metrics = chunk_fns[n](states, rngs, data)
            metrics = jax.device_get(metrics)
            elapsed = time.perf_counter() - t0
            lines = [{"step": end, "seed": seed, **{k: float(v[i]) for k, v in metrics.items()}}
                     for i, seed in enumerate(seeds)]
            health.require_finite(lines, states, step + 1, end, last_good_checkpoint(ckpt_dir))
            step = end
            if evaluator is not None and settings.eval_every > 0 and (
                    step % settings.eval_every < n or step == settings.steps):
                evals = evaluator(policy_fn(algo, states), len(seeds))
                for i, line in enumerate(lines):
                    line.update({k: float(v[i]) for k, v in evals.items()})
            warnings = monitor.add(lines)
            with open(metrics_path, "a") as fh:
                for line in lines:
                    fh.write(json.dumps({**line, "seconds": round(elapsed, 4)}) + "\n")
                for warning in warnings:
                    fh.write(json.dumps(warning) + "\n")
            log(lines)
            report_warnings(warnings)
            if step % settings.checkpoint_every < n or step == settings.steps:
                checkpoint.save(ckpt_dir, step, (states, rngs))
            advance(n)
    return states, out


def read_run_record(run_dir: Path) -> tuple[ModuleType, dict[str, Any], Any]:
    """The algorithm, config.json and the algorithm's config of a run directory, every field a loaded run
    needs checked: a damaged or hand-edited config.json is a one-line error naming it."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise DrorlError(f"{run_dir}: not a run directory (no config.json)")
    try:
        record = json.loads(path.read_bytes())
    except ValueError as exc:  # UnicodeDecodeError included
        raise DrorlError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None
    problem = _run_record_problem(record)
    if problem:
        raise DrorlError(f"{path}: {problem}")
    try:
        algo = algos.get(record["algorithm"])
    except DrorlError as exc:
        raise DrorlError(f"{path}: {exc}") from None
    return algo, record, config_from_dict(algo.Config, record.get("config"), source=str(path))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _run_record_problem(record: Any) -> str | None:
    """What is wrong with a config.json's content for loading its run, or None."""
    if not isinstance(record, dict):
        return f"expected a JSON object, found {type(record).__name__}"
    if not isinstance(record.get("algorithm"), str):
        return "'algorithm' should be an algorithm's name"
    seeds = record.get("seeds")
    if not (isinstance(seeds, list) and seeds and all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)
            and len(set(seeds)) == len(seeds)):
        return "'seeds' should be a list of distinct integers"
    spec = record.get("spec")
    if not isinstance(spec, dict) or not _is_count(spec.get("obs_dim")) or not _is_count(spec.get("act_dim")):
        return "'spec' should hold positive integers 'obs_dim' and 'act_dim'"
    for bound in ("action_low", "action_high"):
        values = spec.get(bound)
        if not (isinstance(values, list) and len(values) == spec["act_dim"]
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            return f"'spec.{bound}' should be a list of {spec['act_dim']} numbers"
    if not (spec.get("task") is None or isinstance(spec["task"], str)):
        return "'spec.task' should be a task's name or null"
    if not (spec.get("num_actions") is None or _is_count(spec["num_actions"])):
        return "'spec.num_actions' should be a positive integer or null"
    if not (record.get("env") is None or isinstance(record["env"], str)):
        return "'env' should be a task's name or null"
    dataset = record.get("dataset")
    if not isinstance(dataset, dict) or not isinstance(dataset.get("metadata", {}), dict):
        return "'dataset' should be an object (its 'metadata' too)"
    return None


def load_states(run_dir: str | Path) -> tuple[ModuleType, dict[str, Any], Any]:
    """The algorithm module, config.json and the latest checkpoint's stacked states of a run."""
    run_dir = Path(run_dir)
    algo, record, config = read_run_record(run_dir)
    s = record["spec"]
    dummy = Spec(s["obs_dim"], s["act_dim"], np.asarray(s["action_low"], np.float32),
                 np.asarray(s["action_high"], np.float32), np.zeros(s["obs_dim"], np.float32),
                 np.ones(s["obs_dim"], np.float32), s.get("task"), s.get("num_actions"))
    try:
        states, rngs = init_states(algo, config, dummy, record["seeds"])
    except Exception as exc:  # a config value no network can be built with (a negative width, ...)
        raise DrorlError(f"{run_dir / 'config.json'}: its {record['algorithm']} config cannot be initialised "
                         f"({exc.__class__.__name__})") from None
    latest = checkpoint.latest(run_dir / "checkpoints")
    if latest is None:
        raise DrorlError(f"{run_dir}: no checkpoint in {run_dir / 'checkpoints'}")
    _, (states, _) = checkpoint.load(latest, (states, rngs))
    return algo, record, jax.tree_util.tree_map(jnp.asarray, states)


__all__ = ["RunSettings", "train", "load_states", "read_run_record", "policy_fn", "device_data", "scan_updates",
           "make_train_chunk", "init_states"]
