"""Soft actor-critic (Haarnoja et al. 2018, with the learned temperature of the 2019 version).

Used online to train the behaviour policies that generate drorl's datasets, and usable as an
algorithm of its own through ``drorl train-online``. Twin critics are one vectorised ensemble. The
model-based offline algorithms (COMBO, DROMO, MOPO) hold a SAC state and reuse its pieces: the next
states' value (``next_value``), the actor's and temperature's step (``policy_step``) and the target
update (``update_target``), with critic losses of their own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from drorl.algos.base import Scaler, Spec
from drorl.nn.critics import CriticEnsemble
from drorl.nn.train_state import TrainState, gradient_step
from drorl.nn.policies import TanhGaussianPolicy, tanh_gaussian_sample_and_log_prob


# metrics the health monitor (drorl.health) watches for drift, and what drifting means
DIAGNOSTICS = {"q_mean": "the critic diverges (bootstrapped values feeding on themselves)"}


@dataclasses.dataclass(frozen=True)
class Config:
    """SAC hyper-parameters (defaults: the SAC paper's, as in SpinningUp and jaxrl).

    Attributes:
        hidden_dims: widths of the actor's and each critic's hidden layers.
        actor_lr: Adam learning rate of the actor.
        critic_lr: Adam learning rate of the critics.
        temperature_lr: Adam learning rate of the temperature (its logarithm).
        gamma: discount.
        tau: Polyak rate of the target critics.
        batch_size: transitions per update.
        num_critics: critics in the ensemble; the target takes their minimum.
        init_temperature: initial entropy coefficient alpha.
        target_entropy: entropy target; None means -|A|.
    """

    hidden_dims: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    num_critics: int = 2
    init_temperature: float = 1.0
    target_entropy: float | None = None


@flax.struct.dataclass
class State:
    actor: TrainState
    critic: TrainState
    target_critic: Any
    temperature: TrainState  # params: log alpha
    scaler: Scaler
    step: jnp.ndarray
    config: Config = flax.struct.field(pytree_node=False)
    act_dim: int = flax.struct.field(pytree_node=False)


def networks(config: Config, act_dim: int) -> tuple[TanhGaussianPolicy, CriticEnsemble]:
    return TanhGaussianPolicy(config.hidden_dims, act_dim), CriticEnsemble(config.hidden_dims, config.num_critics)


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    actor_net, critic_net = networks(config, spec.act_dim)
    k_actor, k_critic = jax.random.split(key)
    obs = jnp.zeros((1, spec.obs_dim), jnp.float32)
    act = jnp.zeros((1, spec.act_dim), jnp.float32)
    critic = critic_net.init(k_critic, obs, act)
    log_temperature = jnp.log(jnp.asarray(config.init_temperature, jnp.float32))
    return State(actor=TrainState.create(actor_net.init(k_actor, obs), optax.adam(config.actor_lr)),
                 critic=TrainState.create(critic, optax.adam(config.critic_lr)),
                 target_critic=jax.tree_util.tree_map(jnp.copy, critic),  # own buffers: states are donated
                 temperature=TrainState.create(log_temperature, optax.adam(config.temperature_lr)),
                 scaler=Scaler.from_spec(spec), step=jnp.zeros((), jnp.int32), config=config,
                 act_dim=spec.act_dim)


def target_entropy(config: Config, act_dim: int) -> float:
    return -float(act_dim) if config.target_entropy is None else config.target_entropy


def critic_loss(q: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """sum_i E[(Q_i(s, a) - y)^2],  y = r + gamma (1 - d) (min_j Qbar_j(s', a') - alpha log pi(a'|s'))."""
    return jnp.mean((q - target[None]) ** 2, axis=1).sum()


def actor_loss(log_prob: jnp.ndarray, q_min: jnp.ndarray, temperature: jnp.ndarray) -> jnp.ndarray:
    """E_s E_{a~pi}[ alpha log pi(a|s) - min_i Q_i(s, a) ] (reparameterised)."""
    return jnp.mean(temperature * log_prob - q_min)


def temperature_loss(log_temperature: jnp.ndarray, log_prob: jnp.ndarray, entropy_target: float) -> jnp.ndarray:
    """-log(alpha) E[log pi(a|s) + H_target]: raises alpha when the entropy falls below its target."""
    return -log_temperature * jnp.mean(jax.lax.stop_gradient(log_prob) + entropy_target)


def next_value(state: State, next_obs: jnp.ndarray, key: jax.Array, entropy_bonus: bool = True) -> jnp.ndarray:
    """min_j Qbar_j(s', a') - alpha log pi(a'|s'), a' ~ pi(.|s') at standardised ``next_obs``; without
    ``entropy_bonus`` the deterministic backup min_j Qbar_j(s', a') (COMBO's)."""
    actor_net, critic_net = networks(state.config, state.act_dim)
    next_mean, next_log_std = actor_net.apply(state.actor.params, next_obs)
    next_actions, next_log_prob = tanh_gaussian_sample_and_log_prob(next_mean, next_log_std, key)
    next_q = critic_net.apply(state.target_critic, next_obs, next_actions).min(axis=0)
    if not entropy_bonus:
        return next_q
    return next_q - jnp.exp(state.temperature.params) * next_log_prob


def policy_step(state: State, obs: jnp.ndarray, key: jax.Array) -> tuple[State, dict]:
    """One step of the actor (``actor_loss`` against the state's critic) and of the temperature, at
    standardised states ``obs``."""
    actor_net, critic_net = networks(state.config, state.act_dim)
    temperature = jnp.exp(state.temperature.params)

    def actor_objective(params):
        mean, log_std = actor_net.apply(params, obs)
        pi_actions, log_prob = tanh_gaussian_sample_and_log_prob(mean, log_std, key)
        q_pi = critic_net.apply(state.critic.params, obs, pi_actions).min(axis=0)
        return actor_loss(log_prob, q_pi, temperature), log_prob

    actor, (a_loss, log_prob), _ = gradient_step(state.actor, actor_objective, has_aux=True)
    entropy_target = target_entropy(state.config, state.act_dim)
    temperature_state, t_loss, _ = gradient_step(state.temperature, temperature_loss, log_prob, entropy_target)
    metrics = {"actor_loss": a_loss, "temperature_loss": t_loss, "temperature": temperature,
               "entropy": -jnp.mean(log_prob)}
    return state.replace(actor=actor, temperature=temperature_state), metrics


def update_target(state: State) -> State:
    """Polyak-average the target critics toward the critics (rate tau) and count the step."""
    target_critic = optax.incremental_update(state.critic.params, state.target_critic, state.config.tau)
    return state.replace(target_critic=target_critic, step=state.step + 1)


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array) -> tuple[State, dict]:
    config = state.config
    _, critic_net = networks(config, state.act_dim)
    obs = state.scaler.observation(batch["observations"])
    next_obs = state.scaler.observation(batch["next_observations"])
    actions = state.scaler.to_unit_action(batch["actions"])
    k_next, k_pi = jax.random.split(key)
    target = batch["rewards"] + config.gamma * (1.0 - batch["terminals"]) * next_value(state, next_obs, k_next)
    target = jax.lax.stop_gradient(target)

    def critic_objective(params):
        q = critic_net.apply(params, obs, actions)
        return critic_loss(q, target), q

    critic, (c_loss, q), _ = gradient_step(state.critic, critic_objective, has_aux=True)
    state, metrics = policy_step(state.replace(critic=critic), obs, k_pi)
    return update_target(state), {"critic_loss": c_loss, **metrics, "q_mean": jnp.mean(q)}


def policy_params(state: State) -> Any:
    """The parameters that act (what the zoo ships)."""
    return state.actor.params


def with_policy_params(state: State, params: Any) -> State:
    return state.replace(actor=state.actor.replace(params=params))


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    actor_net, _ = networks(state.config, state.act_dim)
    mean, log_std = actor_net.apply(state.actor.params, state.scaler.observation(obs))
    if deterministic:
        unit = jnp.tanh(mean)
    else:
        unit, _ = tanh_gaussian_sample_and_log_prob(mean, log_std, key)
    return state.scaler.from_unit_action(unit)
