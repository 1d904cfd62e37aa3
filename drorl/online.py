"""The online training loop (SAC on the MuJoCo tasks): a batch of environments stepped together,
a replay buffer on the device, ``update_every`` env steps then as many updates in one ``lax.scan``.

Runs checkpoint their algorithm state, RNG, replay buffer and counters; a restarted run resumes
from the latest checkpoint (episodes in progress at the checkpoint start afresh). Actor snapshots
taken at every evaluation are what the behaviour-policy zoo is built from.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import drorl
from drorl import algos, checkpoint, health
from drorl.data import buffer as buffer_lib
from drorl.algos.base import Spec
from drorl.envs import action_bounds, get_task, make_env
from drorl.envs.episodes import EpisodeStats, step_cost, summarize
from drorl.errors import DrorlError
from drorl.io_utils import write_json_atomic
from drorl.progress import progress_bar
from drorl.envs.policies import random_policy
from drorl.train import last_good_checkpoint, policy_fn, report_warnings, scan_updates, truncate_metrics


@dataclasses.dataclass(frozen=True)
class OnlineSettings:
    """How an online run collects data and trains; saved in config.json.

    Attributes:
        env_steps: environment steps in total (over all environments).
        seed: seed of environments, exploration and initialisation.
        num_envs: environments stepped together (one batched policy call per step).
        start_steps: uniform random actions for this many env steps before the policy acts (passed through
            the algorithm's ``executed_action`` when it has one: DSRL's safety layer).
        update_every: env steps between update calls; each call runs ``update_every x
            updates_per_step`` updates (a multiple of num_envs).
        updates_per_step: gradient updates per env step (update-to-data ratio).
        buffer_size: replay capacity (oldest transitions are overwritten).
        eval_every: env steps between deterministic evaluations (and actor snapshots); 0: never.
        eval_episodes: episodes per evaluation.
        checkpoint_every: env steps between full checkpoints (state, RNG, replay buffer).
    """

    env_steps: int
    seed: int = 0
    num_envs: int = 1
    start_steps: int = 10_000
    update_every: int = 50
    updates_per_step: float = 1.0
    buffer_size: int = 1_000_000
    eval_every: int = 10_000
    eval_episodes: int = 10
    checkpoint_every: int = 50_000


# donated: without it every insert copies the whole buffer (572 ms per 50 rows for ant's 1M x 220 floats)
_insert = jax.jit(buffer_lib.insert, donate_argnums=0)


def _buffer_sample(buffer: buffer_lib.RingBuffer, state: Any, key: jax.Array) -> dict[str, jax.Array]:
    return buffer_lib.sample(buffer, key, state.config.batch_size)


def make_online_chunk(algo: ModuleType, num_updates: int) -> Callable:
    """A compiled ``(state, rng, buffer) -> (state, rng, metrics)``: ``num_updates`` updates on batches
    drawn uniformly from the buffer's filled rows, inside the program (the offline loop's scan body)."""

    def chunk(state, rng, buffer):
        return scan_updates(algo, _buffer_sample, state, rng, buffer, num_updates)

    return jax.jit(chunk, donate_argnums=(0, 1))


def online_spec(task: str) -> Spec:
    """Unstandardised observations; the action box of the task."""
    info = get_task(task)
    low, high = action_bounds(info)
    return Spec(info.obs_dim, info.act_dim, low, high, np.zeros(info.obs_dim, np.float32),
                np.ones(info.obs_dim, np.float32), info.name, info.num_actions if info.discrete else None)


def _record(algo_name: str, task: str, config: Any, settings: OnlineSettings) -> dict[str, Any]:
    return {"algorithm": algo_name, "env": task, "config": dataclasses.asdict(config),
            "online": dataclasses.asdict(settings), "drorl_version": drorl.__version__}


_MUST_MATCH = ("algorithm", "env", "config", "online.seed", "online.num_envs", "online.buffer_size",
               "online.update_every", "online.updates_per_step")


def train_online(algo_name: str, task: str, out_dir: str | Path, settings: OnlineSettings,
                 config: Any = None, progress: bool = True) -> tuple[Any, Path]:
    """Train ``algo_name`` online on ``task``; resumes from ``out_dir``'s latest checkpoint if any."""
    if settings.update_every % settings.num_envs:
        raise DrorlError(f"--update-every {settings.update_every} must be a multiple of --num-envs {settings.num_envs}")
    algo = algos.get(algo_name, "online")
    config = config if config is not None else algo.Config()
    info = get_task(task)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = _record(algo_name, info.name, config, settings)
    config_path = out / "config.json"
    if config_path.exists():
        checkpoint.require_same_run(config_path, json.loads(config_path.read_text()), record, _MUST_MATCH,
                                    defaults={"config": dataclasses.asdict(algo.Config())})
    write_json_atomic(config_path, record)

    spec = online_spec(info.name)
    key = jax.random.PRNGKey(settings.seed)
    k_init, rng, act_key = jax.random.split(key, 3)
    state = algo.init(config, spec, k_init)
    buffer = buffer_lib.empty(settings.buffer_size, info.obs_dim, info.act_dim, extra=("costs",))
    counters = {"env_steps": 0, "episodes": 0}
    ckpt_dir = out / "checkpoints"
    latest = checkpoint.latest(ckpt_dir)
    if latest is not None:
        _, saved = checkpoint.load(latest, {"state": state, "rng": rng, "counters": counters,
                                            "buffer": buffer})
        state, rng = jax.tree_util.tree_map(jnp.asarray, (saved["state"], saved["rng"]))
        counters = {k: int(v) for k, v in saved["counters"].items()}
        buffer = jax.tree_util.tree_map(jnp.asarray, saved["buffer"])
    metrics_path = out / "metrics.jsonl"
    truncate_metrics(metrics_path, counters["env_steps"])
    monitor = health.Monitor(getattr(algo, "DIAGNOSTICS", {}))
    monitor.load(health.read_records(metrics_path))

    n = settings.num_envs
    envs = [make_env(info) for _ in range(n)]
    start = counters["env_steps"]
    obs = np.stack([env.reset(seed=settings.seed * 100_003 + start + i)[0] for i, env in enumerate(envs)])
    obs = obs.astype(np.float32)
    explore = random_policy(info.name, settings.seed * 100_003 + start)
    acting = jax.jit(lambda st, o, k: algo.act(st, o, k, False))
    # what the algorithm executes for a raw action (DSRL: its safety layer); warm-up actions pass through it
    execute = jax.jit(algo.executed_action) if hasattr(algo, "executed_action") else None
    num_updates = int(settings.update_every * settings.updates_per_step)
    chunk = make_online_chunk(algo, num_updates) if num_updates else None
    staged: list[tuple] = []
    episodes = [EpisodeStats() for _ in range(n)]
    finished: list[EpisodeStats] = []
    t_last = time.perf_counter()
    with progress_bar(f"{algo_name} on {info.name}", total=settings.env_steps, completed=start,
                      enabled=progress, unit="steps") as advance:
        while counters["env_steps"] < settings.env_steps:
            step = counters["env_steps"]
            if step < settings.start_steps:
                actions = explore(obs) if execute is None else np.asarray(execute(state, obs, explore(obs)))
            else:
                actions = np.asarray(acting(state, obs, jax.random.fold_in(act_key, step)))
            for i, env in enumerate(envs):
                nxt, reward, terminated, truncated, step_info = env.step(actions[i])
                staged.append((obs[i].copy(), actions[i], reward, nxt, float(terminated), step_cost(step_info)))
                episodes[i].add_step(reward, step_info)
                if terminated or truncated:
                    finished.append(episodes[i])
                    episodes[i] = EpisodeStats()
                    counters["episodes"] += 1
                    nxt, _ = env.reset()
                obs[i] = nxt
            counters["env_steps"] += n
            advance(n)
            if len(staged) < settings.update_every:
                continue
            rows = {k: jnp.asarray(np.asarray([r[j] for r in staged], np.float32))
                    for j, k in enumerate((*buffer_lib.TRANSITION_COLUMNS, "costs"))}
            buffer = _insert(buffer, rows)
            staged = []
            line: dict[str, Any] = {"step": counters["env_steps"]}
            if chunk is not None and counters["env_steps"] >= settings.start_steps:
                state, rng, metrics = chunk(state, rng, buffer)
                line.update({k: float(v) for k, v in jax.device_get(metrics).items()})
                health.require_finite([line], state, counters["env_steps"] - settings.update_every + 1,
                                      counters["env_steps"], last_good_checkpoint(ckpt_dir))
            if finished:
                line.update({**summarize(finished), "episodes": counters["episodes"]})
                finished = []
            step = counters["env_steps"]
            if settings.eval_every and step % settings.eval_every < settings.update_every:
                line.update(_evaluate(algo, state, info.name, settings, step))
                checkpoint.save(out / "snapshots", step, {"actor": algo.policy_params(state), "scaler": state.scaler},
                                keep=10**9)
            now = time.perf_counter()
            line["steps_per_s"] = settings.update_every / max(now - t_last, 1e-9)
            t_last = now
            warnings = monitor.add([line])
            with open(metrics_path, "a") as fh:
                fh.write("".join(json.dumps(record) + "\n" for record in (line, *warnings)))
            report_warnings(warnings)
            if step % settings.checkpoint_every < settings.update_every or step >= settings.env_steps:
                checkpoint.save(ckpt_dir, step, {"state": state, "rng": rng, "counters": counters,
                                                 "buffer": buffer}, keep=1)
    for env in envs:
        env.close()
    return state, out


def _evaluate(algo: ModuleType, state: Any, task: str, settings: OnlineSettings, step: int) -> dict[str, float]:
    from drorl.evaluate import run_episodes

    stacked = jax.tree_util.tree_map(lambda x: x[None], state)
    returns = run_episodes(policy_fn(algo, stacked), 1, task, [None], settings.eval_episodes,
                           seed=10_000 + step)[0, 0]
    return {"eval/return": float(returns.mean()), "eval/return_std": float(returns.std())}
