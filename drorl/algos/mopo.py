"""MOPO: model-based offline policy optimisation (Yu et al. 2020), the max-std penalty with a fixed lambda.

SAC (drorl.algos.sac: its critic loss, entropy backup, actor and temperature) on batches that mix
real rows with model rollouts (drorl.algos.model_based) whose rewards are penalised by the model's
uncertainty:

    r~(s, a) = r^(s, a) - lambda u(s, a),   u = max over members m of ||sigma_m(s, a)||_2

(the norm over the predicted standard deviations of (s' - s, r) in raw units, as MOPO's code; the
DROMO paper's Section 2.3). The maximum runs over every member of the ensemble, as in MOPO's Eq. for u
(i = 1..N) and its authors' code (``fake_env.py`` takes it over all networks' predictions; the elites
only choose which member a rollout samples from); the spec's "max over elites" is not what they run.
The penalty is stored with each model row when it is rolled out and applied when the row is trained on;
real rows are not penalised. Public defaults (OfflineRL-Kit): real ratio 0.05, 2 x 256 networks, actor
lr 1e-4, critic lr 3e-4, h and lambda per task (hopper-medium 5 and 5, halfcheetah-medium 1 and 0.5,
walker2d-medium 5 and 0.5): drorl's defaults are h = 5 and lambda = 1; its model-based suite sets them
per dataset from MOPO's authors' table (``drorl.benchmarks.model_based.public_settings``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from drorl.algos import model_based, sac
from drorl.algos.base import Spec
from drorl.nn import dynamics


@dataclasses.dataclass(frozen=True)
class Config:
    """MOPO's hyper-parameters (defaults: OfflineRL-Kit's MOPO, spec/model-based.md).

    Attributes:
        model: the dynamics ensemble, rollouts and real ratio f (0.05).
        sac: the SAC actor-critic.
        penalty_weight: lambda (MOPO-auto: its initial value).
    """

    model: model_based.ModelConfig = model_based.ModelConfig(real_ratio=0.05)
    sac: sac.Config = sac.Config(actor_lr=1e-4, critic_lr=3e-4)
    penalty_weight: float = 1.0


State = model_based.State
prepare = model_based.prepare
sample = model_based.sample


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    return model_based.init_state(config, spec, key, buffer_columns=("penalty",))


def max_std_penalty(model: dynamics.Model, info: dict) -> jnp.ndarray:
    """u(s, a) = max over every member m of ||sigma_m(s, a)||_2 (MOPO's max-std uncertainty, raw units) [B]."""
    del model  # every member counts, elites or not
    return jnp.max(jnp.linalg.norm(info["std"], axis=-1), axis=0)


def penalised_rewards(rewards: jnp.ndarray, penalty: jnp.ndarray, weight: jnp.ndarray) -> jnp.ndarray:
    """r~ = r - lambda u (MOPO's uncertainty-penalised reward)."""
    return rewards - weight * penalty


def update_with(state: State, batch: dict, key: jax.Array, penalty: Callable[[dynamics.Model, dict], jnp.ndarray],
                weight: jnp.ndarray) -> tuple[State, dict, dict]:
    """MOPO's update with a given penalty and weight; also returns the mixed batch (before penalising)."""
    config = state.config
    k_model, k_sac = jax.random.split(key)
    model_buffer, mixed, model_metrics = model_based.model_step(
        config.model, config.sac.batch_size, state.dynamics, state.model_buffer, state.task, state.agent, batch,
        k_model, penalty)
    penalised = {**mixed, "rewards": penalised_rewards(mixed["rewards"], mixed["penalty"], weight)}
    agent, metrics = sac.update(state.agent, penalised, k_sac)
    model_rows = 1.0 - mixed["is_real"]
    metrics = {**metrics, **model_metrics, "penalty_weight": weight,
               "model_penalty_mean": jnp.sum(mixed["penalty"] * model_rows) / jnp.sum(model_rows)}
    return state.replace(agent=agent, model_buffer=model_buffer), metrics, mixed


def update(state: State, batch: dict, key: jax.Array) -> tuple[State, dict]:
    new_state, metrics, _ = update_with(state, batch, key, max_std_penalty, jnp.asarray(state.config.penalty_weight))
    return new_state, metrics


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    return sac.act(state.agent, obs, key, deterministic)
