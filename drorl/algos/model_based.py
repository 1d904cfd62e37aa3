"""What the model-based offline algorithms (COMBO, DROMO, MOPO) share (spec/model-based.md).

- ``prepare``: the dynamics ensemble (``drorl.nn.dynamics``), trained once per dataset, ``model_seed``
  and dynamics config and cached as msgpack (``dynamics.cached``) in the directory the loop gives
  (``drorl train``: ``$DRORL_DATA/dynamics``, so that restarts and other algorithms on the same data
  reuse it; ``drorl train-dynamics`` fills the same cache). It reaches ``init`` as
  ``spec.prepared["dynamics"]`` and lives, fixed, in the algorithm's state and so in its checkpoints.
  Every policy seed of a run shares the one ensemble.
- ``rollout``: h model steps from dataset states with the current policy's actions, each row from a
  random elite, ended by the task's termination rule in JAX; inside the compiled update.
- the model buffer: a ``RingBuffer`` in the state holding the rollouts of the last ``retain`` refreshes.
- ``real_and_starts`` and ``model_step``: each update mixes ``f B`` real rows with ``(1 - f) B`` model rows.

A refresh of ``rollout_batch_size`` start states every ``rollout_every`` updates (the public code's
schedule) is spread evenly over those updates: each update rolls out ``rollout_batch_size /
rollout_every`` starts (rounded up) and writes them into the buffer before drawing its model rows.
The buffer holds the same window of rollouts and each update does the same work as on average under
the periodic schedule, but the loop trains seeds under ``vmap``, where a conditional refresh would
compute its expensive branch at every update.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

from drorl.algos import sac
from drorl.algos.base import Spec
from drorl.data import buffer as ring
from drorl.data.dataset import Dataset
from drorl.data.sampling import uniform_batch
from drorl.envs.termination import terminated
from drorl.nn import dynamics

MODEL_COLUMNS = ("observations", "actions", "rewards", "next_observations", "terminals")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The dynamics ensemble, its rollouts and the mixing of real and model data.

    Attributes:
        dynamics: the ensemble's hyper-parameters (drorl.nn.dynamics.Config).
        model_seed: the ensemble's training seed (with the dataset and ``dynamics``, its cache key).
        horizon: h, model steps per rollout.
        rollout_batch_size: dataset states rolled out from per refresh.
        rollout_every: K, updates per refresh (a refresh is spread over them: module docstring).
        retain: refreshes whose rollouts the model buffer holds (its capacity is
            rollout_batch_size * horizon * retain transitions).
        real_ratio: f, the fraction of real transitions in a batch (and DROMO's mixture weight).
    """

    dynamics: dynamics.Config = dynamics.Config()
    model_seed: int = 0
    horizon: int = 5
    rollout_batch_size: int = 50_000
    rollout_every: int = 1000
    retain: int = 5
    real_ratio: float = 0.5


@flax.struct.dataclass
class State:
    """A SAC agent trained on real and model data, with its (fixed) ensemble and model buffer: the state of
    COMBO and MOPO, nested in DROMO's and MOPO-auto's. ``config`` is the algorithm's Config, which has
    ``model`` (ModelConfig) and ``sac`` fields."""

    agent: sac.State
    dynamics: dynamics.Model
    model_buffer: ring.RingBuffer
    config: Any = flax.struct.field(pytree_node=False)
    task: str | None = flax.struct.field(pytree_node=False)


def init_state(config: Any, spec: Spec, key: jax.Array, buffer_columns: tuple[str, ...] = ()) -> State:
    """A fresh agent, the prepared ensemble and an empty model buffer (with ``buffer_columns`` beyond the
    transition's, e.g. MOPO's ``penalty``) for an algorithm config with ``model`` and ``sac`` fields."""
    k_agent, k_model = jax.random.split(key)
    return State(agent=sac.init(config.sac, spec, k_agent), dynamics=dynamics_of(config.model, spec, k_model),
                 model_buffer=empty_buffer(config.model, spec, buffer_columns), config=config, task=spec.task)


def prepare(config: Any, dataset: Dataset, spec: Spec, directory: Path, progress: bool = True) -> Spec:
    """The algorithms' ``prepare`` hook: the cached ensemble of ``config.model`` (prepare_dynamics)."""
    return prepare_dynamics(config.model, dataset, spec, directory, progress)


def sample(data: dict[str, jax.Array], state: State, key: jax.Array) -> dict:
    """The algorithms' ``sample`` hook: real rows and rollout starts for ``state.config`` (real_and_starts)."""
    return real_and_starts(state.config.model, state.config.sac.batch_size, data, key)


def prepare_dynamics(config: ModelConfig, dataset: Dataset, spec: Spec, directory: Path, progress: bool,
                     **extra: Any) -> Spec:
    """``spec`` with ``prepared = {"dynamics": the cached or newly trained ensemble, **extra}``."""
    model, _, _ = dynamics.cached(config.dynamics, dataset, config.model_seed, directory, progress)
    return dataclasses.replace(spec, prepared={"dynamics": model, **extra})


def dynamics_of(config: ModelConfig, spec: Spec, key: jax.Array) -> dynamics.Model:
    """The prepared ensemble; without one (a state that a checkpoint will fill: drorl.train.load_states)
    an untrained ensemble of the configured shape."""
    if spec.prepared is not None:
        return spec.prepared["dynamics"]
    return dynamics.init(config.dynamics, spec.obs_dim, spec.act_dim, key)


def starts_per_update(config: ModelConfig) -> int:
    return math.ceil(config.rollout_batch_size / config.rollout_every)


def empty_buffer(config: ModelConfig, spec: Spec, extra: tuple[str, ...] = ()) -> ring.RingBuffer:
    return ring.empty(config.rollout_batch_size * config.horizon * config.retain, spec.obs_dim, spec.act_dim, extra)


def rollout(model: dynamics.Model, task: str | None, policy: Callable[[jnp.ndarray, jax.Array], jnp.ndarray],
            start_obs: jnp.ndarray, horizon: int, key: jax.Array,
            penalty: Callable[[dynamics.Model, dict], jnp.ndarray] | None = None
            ) -> tuple[dict[str, jnp.ndarray], jnp.ndarray]:
    """``horizon`` model steps from ``start_obs`` [B, obs_dim]: ``(rows, valid)`` with rows [horizon * B]
    in step-major order and ``valid`` false for the steps after a rollout terminated.

    Step t uses ``jax.random.split(key, horizon)[t]``, split into the policy's key and the model's
    (``dynamics.predict``: a random elite per row, sampled). ``policy(obs, key)`` returns actions in the
    task's box; ``task`` None never terminates; ``penalty(model, info)`` adds a ``penalty`` column (MOPO).
    """

    def step(carry, step_key):
        obs, alive = carry
        k_policy, k_model = jax.random.split(step_key)
        actions = policy(obs, k_policy)
        next_obs, rewards, info = dynamics.predict(model, obs, actions, k_model)
        done = jnp.zeros(obs.shape[0], bool) if task is None else terminated(task, next_obs, jnp)
        row = {"observations": obs, "actions": actions, "rewards": rewards, "next_observations": next_obs,
               "terminals": done.astype(jnp.float32)}
        if penalty is not None:
            row["penalty"] = penalty(model, info)
        return (next_obs, alive & ~done), (row, alive)

    alive = jnp.ones(start_obs.shape[0], bool)
    _, (rows, valid) = jax.lax.scan(step, (start_obs, alive), jax.random.split(key, horizon))
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
    return jax.tree_util.tree_map(flat, rows), flat(valid)


def real_and_starts(config: ModelConfig, batch_size: int, data: dict[str, jax.Array], key: jax.Array) -> dict:
    """The real part of a batch (``round(f B)`` uniform rows) and the update's rollout start states."""
    k_real, k_starts = jax.random.split(key)
    starts = jax.random.randint(k_starts, (starts_per_update(config),), 0, data["observations"].shape[0])
    return {"real": uniform_batch(data, k_real, round(config.real_ratio * batch_size)),
            "rollout_starts": data["observations"][starts]}


def model_step(config: ModelConfig, batch_size: int, model: dynamics.Model, model_buffer: ring.RingBuffer,
               task: str | None, actor: sac.State, batch: dict, key: jax.Array,
               penalty: Callable[[dynamics.Model, dict], jnp.ndarray] | None = None
               ) -> tuple[ring.RingBuffer, dict[str, jnp.ndarray], dict[str, jnp.ndarray]]:
    """Roll the actor's policy (sampled actions) out from ``batch["rollout_starts"]``, write the valid rows
    into the buffer and draw its share of model rows: ``(buffer, mixed batch, metrics)``. The mixed
    batch has the real rows first and an ``is_real`` column (1 real, 0 model); with ``penalty`` its
    ``penalty`` column is 0 on real rows."""
    k_rollout, k_rows = jax.random.split(key)
    policy = lambda obs, k: sac.act(actor, obs, k, deterministic=False)  # noqa: E731
    rows, valid = rollout(model, task, policy, batch["rollout_starts"], config.horizon, k_rollout, penalty)
    model_buffer = ring.insert(model_buffer, rows, valid)
    real = batch["real"]
    n_real = real["rewards"].shape[0]
    model_rows = ring.sample(model_buffer, k_rows, batch_size - n_real)
    columns = MODEL_COLUMNS + (("penalty",) if penalty is not None else ())
    real = {**real, "penalty": jnp.zeros(n_real)}
    mixed = {k: jnp.concatenate([real[k].astype(jnp.float32), model_rows[k]]) for k in columns}
    mixed["is_real"] = jnp.concatenate([jnp.ones(n_real), jnp.zeros(batch_size - n_real)])
    metrics = {"rollout_valid": jnp.mean(valid), "model_reward_mean": jnp.mean(model_rows["rewards"]),
               "model_buffer_size": model_buffer.size.astype(jnp.float32)}
    return model_buffer, mixed, metrics
