"""Behaviour cloning.

Deterministic tanh policy trained with the mean squared error (default), or a tanh-Gaussian policy
trained with the negative log-likelihood. Defaults follow DR-BC's published BC baseline
(256-256 ReLU, batch 256, Adam 1e-4 decayed by 0.9 every 10k steps, standardised states) so that
BC, DR-BC and BE-DROIL differ only in how they weight the loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
import optax

from drorl.algos.base import Scaler, Spec, adam_with_step_decay
from drorl.nn.train_state import TrainState, gradient_step
from drorl.nn.policies import (DeterministicPolicy, TanhGaussianPolicy, tanh_gaussian_log_prob,
                               tanh_gaussian_sample)


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """The imitation policy and its optimiser: BC's, and the policy of DR-BC and BE-DROIL.

    Attributes:
        distribution: "deterministic" (tanh MLP, MSE loss) or "gaussian" (tanh-Gaussian, NLL loss).
        hidden_dims: widths of the policy's hidden layers.
        lr: Adam learning rate.
        lr_decay: factor applied to the learning rate every ``lr_decay_every`` steps (1.0: constant).
        lr_decay_every: steps between learning-rate decays.
    """

    distribution: Literal["deterministic", "gaussian"] = "deterministic"
    hidden_dims: tuple[int, ...] = (256, 256)
    lr: float = 1e-4
    lr_decay: float = 0.9
    lr_decay_every: int = 10_000


@dataclasses.dataclass(frozen=True)
class Config:
    """BC hyper-parameters.

    Attributes:
        policy: the policy network and its optimiser.
        batch_size: transitions per update.
        time_discount: None (plain BC) or g in (0, 1]: weight each transition by g^t, t its time step
            in its trajectory, self-normalised over the batch. With g = BE-DROIL's gamma these are the
            weights BE-DROIL's balance equation alone pins on uniformly sampled demonstrations of
            distinct states (docs/results/be-droil-weights.md): the ablation that separates that time
            emphasis from the robust weighting.
    """

    policy: PolicyConfig = PolicyConfig()
    batch_size: int = 256
    time_discount: float | None = None


@flax.struct.dataclass
class State:
    """BC's state. DR-BC and BE-DROIL states have the same ``policy``, ``scaler`` and ``act_dim`` and a
    config with a ``policy`` field, which is all ``act`` reads."""

    policy: TrainState
    scaler: Scaler
    step: jnp.ndarray
    config: Config = flax.struct.field(pytree_node=False)
    act_dim: int = flax.struct.field(pytree_node=False)


def policy_network(config: PolicyConfig, act_dim: int) -> DeterministicPolicy | TanhGaussianPolicy:
    cls = DeterministicPolicy if config.distribution == "deterministic" else TanhGaussianPolicy
    return cls(config.hidden_dims, act_dim)


def init_policy(config: PolicyConfig, spec: Spec, key: jax.Array) -> TrainState:
    """The policy's parameters and Adam (with step decay) state."""
    params = policy_network(config, spec.act_dim).init(key, jnp.zeros((1, spec.obs_dim), jnp.float32))
    return TrainState.create(params, adam_with_step_decay(config.lr, config.lr_decay, config.lr_decay_every))


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    return State(policy=init_policy(config.policy, spec, key), scaler=Scaler.from_spec(spec),
                 step=jnp.zeros((), jnp.int32), config=config, act_dim=spec.act_dim)


def per_sample_imitation_loss(config: PolicyConfig, act_dim: int, params: Any, obs: jnp.ndarray,
                              unit_actions: jnp.ndarray) -> jnp.ndarray:
    """l_pi(s, a) per sample: ||pi(s) - a||^2 / |A| (deterministic) or -log pi(a|s) (Gaussian).

    ``obs`` are standardised and ``unit_actions`` lie in [-1, 1]^A. Shared with DR-BC and BE-DROIL,
    whose losses are weightings of this one.
    """
    net = policy_network(config, act_dim)
    if config.distribution == "deterministic":
        return jnp.mean((net.apply(params, obs) - unit_actions) ** 2, axis=-1)
    mean, log_std = net.apply(params, obs)
    return -tanh_gaussian_log_prob(mean, log_std, unit_actions)


def bc_loss(per_sample_loss: jnp.ndarray) -> jnp.ndarray:
    """L(pi) = E_D[ l_pi(s, a) ]: the unweighted imitation loss."""
    return jnp.mean(per_sample_loss)


def time_discounted_bc_loss(per_sample_loss: jnp.ndarray, time_steps: jnp.ndarray, discount: float) -> jnp.ndarray:
    """sum_i g^(t_i) l_pi(s_i, a_i) / sum_i g^(t_i): BC weighted by the T (1 - g) g^t that the balance
    equation (BE-DROIL, Eq. 7) alone admits on uniformly sampled trajectories of distinct states,
    self-normalised over the batch (the constant T (1 - g) cancels)."""
    weights = discount**time_steps
    return jnp.sum(weights * per_sample_loss) / jnp.sum(weights)


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array) -> tuple[State, dict]:
    del key  # BC's update is deterministic given the batch.
    config = state.config
    obs = state.scaler.observation(batch["observations"])
    target = state.scaler.to_unit_action(batch["actions"])

    def loss_fn(params):
        losses = per_sample_imitation_loss(config.policy, state.act_dim, params, obs, target)
        if config.time_discount is None:
            return bc_loss(losses)
        return time_discounted_bc_loss(losses, batch["time_steps"], config.time_discount)

    policy, loss, grads = gradient_step(state.policy, loss_fn)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    return state.replace(policy=policy, step=state.step + 1), metrics


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    config = state.config.policy
    net = policy_network(config, state.act_dim)
    x = state.scaler.observation(obs)
    if config.distribution == "deterministic":
        unit = net.apply(state.policy.params, x)
    else:
        mean, log_std = net.apply(state.policy.params, x)
        unit = jnp.tanh(mean) if deterministic else tanh_gaussian_sample(mean, log_std, key)
    return state.scaler.from_unit_action(unit)
