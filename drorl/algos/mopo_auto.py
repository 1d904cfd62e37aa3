"""MOPO-auto: MOPO whose penalty is the model's entropy, with its weight lambda learned by minimising
J(lambda) of Appendix B of the DROMO paper (Eq. 28-30; spec/model-based.md and its corrections).

Appendix B turns "maximise the return subject to E_rho[H(T^(.|s, a))] <= delta" into a Lagrangian:
the policy maximises the penalised reward r - lambda u and lambda minimises

    J(lambda) = E_rho[lambda log T^(s'|s, a) + lambda delta],   dJ/dlambda = delta - E_rho[u],

so lambda rises while the rollouts' entropy exceeds delta: delta is an upper bound on the model's
entropy, the reverse of SAC's temperature, whose code is therefore not reused. Two traps the spec's
corrections name, and drorl's choices:

- The differential entropy H = 1/2 sum_i (1 + log 2 pi sigma_i^2) is negative for sigma_i < 0.242, so
  r - lambda H is a bonus that depends on the units. drorl takes sigma of the standardised targets
  (each dimension of (s' - s, r) has spread 1 in the data; ``info["normalised_std"]``), the member of
  highest entropy among all members (MOPO's u and its authors' code take the max over every member; the
  spec's corrections say elites, which is not what MOPO runs), and penalises only the entropy
  above that of a Gaussian with standardised std ``reference_std`` in every dimension:
  u = max(0, max_m H_m(s, a) - H_ref). The default 0.25 is about twice a well-fitted model's std on
  the data, so in-distribution rows go unpenalised.
- lambda = exp(log lambda) stays positive; J is minimised in log lambda with Adam.

``entropy_target`` (delta, nats of u) defaults to 0.5: the average excess entropy the rollouts may
keep before lambda grows.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import flax.struct
import jax
import jax.numpy as jnp
import optax

from drorl.algos import mopo
from drorl.algos.base import Spec
from drorl.data.dataset import Dataset
from drorl.nn import dynamics
from drorl.nn.train_state import TrainState, gradient_step


@dataclasses.dataclass(frozen=True)
class Config:
    """MOPO-auto's hyper-parameters.

    Attributes:
        mopo: MOPO's model, rollouts, SAC and initial lambda (``mopo.penalty_weight``).
        entropy_target: delta, the bound on the rollouts' mean excess entropy E_rho[u] (nats).
        reference_std: the standardised std per dimension whose entropy is H_ref.
        penalty_weight_lr: Adam learning rate of log lambda.
    """

    mopo: mopo.Config = mopo.Config()
    entropy_target: float = 0.5
    reference_std: float = 0.25
    penalty_weight_lr: float = 3e-4


@flax.struct.dataclass
class State:
    mopo: mopo.State
    log_penalty_weight: TrainState
    config: Config = flax.struct.field(pytree_node=False)


def prepare(config: Config, dataset: Dataset, spec: Spec, directory: Path, progress: bool = True) -> Spec:
    return mopo.prepare(config.mopo, dataset, spec, directory, progress)


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    log_weight = jnp.log(jnp.asarray(config.mopo.penalty_weight, jnp.float32))
    return State(mopo=mopo.init(config.mopo, spec, key),
                 log_penalty_weight=TrainState.create(log_weight, optax.adam(config.penalty_weight_lr)), config=config)


def sample(data: dict[str, jax.Array], state: State, key: jax.Array) -> dict:
    return mopo.sample(data, state.mopo, key)


def gaussian_entropy(std: jnp.ndarray) -> jnp.ndarray:
    """H = 1/2 sum_i (1 + log(2 pi sigma_i^2)) over the last axis (Appendix B's H(T^(s, a)))."""
    return 0.5 * jnp.sum(1.0 + jnp.log(2.0 * math.pi * std**2), axis=-1)


def entropy_penalty(reference_std: float):
    """u(s, a) = max(0, max over every member of H_m(s, a) - H_ref), on standardised targets."""

    def penalty(model: dynamics.Model, info: dict) -> jnp.ndarray:
        del model  # every member counts, elites or not
        entropy = jnp.max(gaussian_entropy(info["normalised_std"]), axis=0)
        reference = gaussian_entropy(jnp.full(info["normalised_std"].shape[-1], reference_std))
        return jnp.maximum(entropy - reference, 0.0)

    return penalty


def penalty_weight_objective(log_weight: jnp.ndarray, penalty: jnp.ndarray, model_rows: jnp.ndarray,
                          entropy_target: float) -> jnp.ndarray:
    """J(lambda) = lambda (delta - E_rho[u]) over the batch's model rows (Appendix B, Eq. 30, with the
    excess entropy u for -log T^): its gradient raises lambda when E_rho[u] > delta."""
    mean_penalty = jnp.sum(penalty * model_rows) / jnp.sum(model_rows)
    return jnp.exp(log_weight) * (entropy_target - jax.lax.stop_gradient(mean_penalty))


def update(state: State, batch: dict, key: jax.Array) -> tuple[State, dict]:
    config = state.config
    weight = jnp.exp(state.log_penalty_weight.params)
    mopo_state, metrics, mixed = mopo.update_with(state.mopo, batch, key, entropy_penalty(config.reference_std),
                                                  weight)
    log_weight, j_loss, _ = gradient_step(state.log_penalty_weight, penalty_weight_objective, mixed["penalty"],
                                          1.0 - mixed["is_real"], config.entropy_target)
    return state.replace(mopo=mopo_state, log_penalty_weight=log_weight), {**metrics, "penalty_weight_loss": j_loss}


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    return mopo.act(state.mopo, obs, key, deterministic)
