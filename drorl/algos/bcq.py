"""BCQ: batch-constrained deep Q-learning for continuous actions (Fujimoto, Meger, Precup 2019).

A conditional VAE models the behaviour policy; a perturbation actor xi(s, a) = phi tanh(.) nudges
decoded actions within [-phi, phi]; twin critics learn with the soft clipped double-Q target over
n decoded-and-perturbed next actions,

    y = r + g (1 - d) max_i [ lam min(Q1', Q2') + (1 - lam) max(Q1', Q2') ](s', a_i),

and acting picks the best of n perturbed decoded actions by Q1. Defaults are the paper's (VAE
750-750 with latent 2|A|, actor and critics 400-300, Adam 1e-3, tau 0.005, batch 100, phi 0.05,
lam 0.75, n 10). Actions are handled in the normalised box [-1, 1]^A (max_action = 1 there).
``update`` takes optional ``rewards`` (in place of the batch's: OVR's augmented reward) and
``critic_weights`` (per-sample weights of the critic loss: OVR's I.W. ablation).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from drorl.algos.base import Scaler, Spec
from drorl.nn.critics import CriticEnsemble
from drorl.nn.mlp import MLP
from drorl.nn.train_state import TrainState, gradient_step
from drorl.nn.vae import ConditionalVAE, vae_loss


# metrics the health monitor (drorl.health) watches for drift, and what drifting means
DIAGNOSTICS = {"q_mean": "the critic diverges (bootstrapped values feeding on themselves)"}


@dataclasses.dataclass(frozen=True)
class Config:
    """BCQ hyper-parameters (defaults from the paper and its reference implementation).

    Attributes:
        vae_hidden_dims: widths of the VAE's encoder and decoder.
        hidden_dims: widths of the perturbation actor and of each critic.
        lr: Adam learning rate of every network.
        gamma: discount.
        tau: Polyak rate of the target actor and critics.
        batch_size: transitions per update.
        phi: the perturbation's range [-phi, phi] (normalised actions).
        lam: weight of the minimum in the soft clipped double-Q target.
        num_samples: decoded actions per next state in the target.
        act_samples: decoded actions per state when acting (the reference implementation acts with
            100; 10 reproduces drorl's committed BCQ and OVR results).
        kl_weight: weight of the VAE's KL term.
    """

    vae_hidden_dims: tuple[int, ...] = (750, 750)
    hidden_dims: tuple[int, ...] = (400, 300)
    lr: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 100
    phi: float = 0.05
    lam: float = 0.75
    num_samples: int = 10
    act_samples: int = 10
    kl_weight: float = 0.5


class PerturbationActor(nn.Module):
    """a + xi(s, a), xi = phi * tanh(MLP([s, a])), clipped to [-1, 1]."""

    hidden_dims: tuple[int, ...]
    act_dim: int
    phi: float

    @nn.compact
    def __call__(self, obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
        xi = self.phi * jnp.tanh(MLP(self.hidden_dims, self.act_dim)(jnp.concatenate([obs, action], -1)))
        return jnp.clip(action + xi, -1.0, 1.0)


@flax.struct.dataclass
class State:
    vae: TrainState
    actor: TrainState
    target_actor: Any
    critic: TrainState
    target_critic: Any
    scaler: Scaler
    step: jnp.ndarray
    config: Config = flax.struct.field(pytree_node=False)
    act_dim: int = flax.struct.field(pytree_node=False)


def _networks(config: Config, act_dim: int):
    return (ConditionalVAE(config.vae_hidden_dims, act_dim, 2 * act_dim),
            PerturbationActor(config.hidden_dims, act_dim, config.phi),
            CriticEnsemble(config.hidden_dims, 2))


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    vae_net, actor_net, critic_net = _networks(config, spec.act_dim)
    k_vae, k_sample, k_actor, k_critic = jax.random.split(key, 4)
    obs, act = jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.act_dim))
    actor = actor_net.init(k_actor, obs, act)
    critic = critic_net.init(k_critic, obs, act)
    adam = optax.adam(config.lr)
    copy = lambda tree: jax.tree_util.tree_map(jnp.copy, tree)  # noqa: E731  own buffers: states are donated
    return State(vae=TrainState.create(vae_net.init(k_vae, obs, act, k_sample), adam),
                 actor=TrainState.create(actor, adam), target_actor=copy(actor),
                 critic=TrainState.create(critic, adam), target_critic=copy(critic),
                 scaler=Scaler.from_spec(spec), step=jnp.zeros((), jnp.int32), config=config, act_dim=spec.act_dim)


def soft_clipped_double_q(q: jnp.ndarray, lam: float) -> jnp.ndarray:
    """max over sampled actions of lam min_j Q_j + (1 - lam) max_j Q_j; q is [2, batch, samples]."""
    return jnp.max(lam * q.min(axis=0) + (1.0 - lam) * q.max(axis=0), axis=-1)


def _candidates(vae_net, actor_net, vae, actor, obs: jnp.ndarray, n: int, key: jax.Array):
    """n decoded-and-perturbed actions per state: ([batch * n, obs_dim], [batch * n, act_dim])."""
    repeated = jnp.repeat(obs, n, axis=0)
    decoded = vae_net.apply(vae, repeated, key=key, method=ConditionalVAE.decode)
    return repeated, actor_net.apply(actor, repeated, decoded)


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array, rewards: jnp.ndarray | None = None,
           critic_weights: jnp.ndarray | None = None) -> tuple[State, dict]:
    """One BCQ step; ``rewards`` replaces the batch's rewards in the target and ``critic_weights``
    weights the critic loss per sample (both for OVR)."""
    config = state.config
    vae_net, actor_net, critic_net = _networks(config, state.act_dim)
    obs = state.scaler.observation(batch["observations"])
    next_obs = state.scaler.observation(batch["next_observations"])
    actions = state.scaler.to_unit_action(batch["actions"])
    rewards = batch["rewards"] if rewards is None else rewards
    k_vae, k_next, k_actor = jax.random.split(key, 3)

    def vae_objective(params):
        reconstruction, mean, log_std = vae_net.apply(params, obs, actions, k_vae)
        return vae_loss(reconstruction, actions, mean, log_std, config.kl_weight)

    vae, v_loss, _ = gradient_step(state.vae, vae_objective)

    n = config.num_samples
    rep_next, next_actions = _candidates(vae_net, actor_net, vae.params, state.target_actor, next_obs, n, k_next)
    next_q = critic_net.apply(state.target_critic, rep_next, next_actions).reshape(2, -1, n)
    target = rewards + config.gamma * (1.0 - batch["terminals"]) * soft_clipped_double_q(next_q, config.lam)
    target = jax.lax.stop_gradient(target)
    sample_weights = jnp.ones_like(target) if critic_weights is None else critic_weights

    def critic_objective(params):
        q = critic_net.apply(params, obs, actions)
        return jnp.mean(sample_weights[None] * (q - target[None]) ** 2, axis=1).sum(), q

    critic, (c_loss, q), _ = gradient_step(state.critic, critic_objective, has_aux=True)
    sampled = jax.lax.stop_gradient(vae_net.apply(vae.params, obs, key=k_actor, method=ConditionalVAE.decode))

    def actor_objective(params):
        return -jnp.mean(critic_net.apply(critic.params, obs, actor_net.apply(params, obs, sampled))[0])

    actor, a_loss, _ = gradient_step(state.actor, actor_objective)
    metrics = {"vae_loss": v_loss, "critic_loss": c_loss, "actor_loss": a_loss, "q_mean": jnp.mean(q),
               "target_mean": jnp.mean(target)}
    new_state = state.replace(
        vae=vae, actor=actor, critic=critic,
        target_actor=optax.incremental_update(actor.params, state.target_actor, config.tau),
        target_critic=optax.incremental_update(critic.params, state.target_critic, config.tau), step=state.step + 1)
    return new_state, metrics


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    """The best of ``act_samples`` perturbed decoded actions by Q1 (BCQ acts this way in both modes)."""
    del deterministic
    config = state.config
    vae_net, actor_net, critic_net = _networks(config, state.act_dim)
    n = config.act_samples
    flat = obs.reshape(-1, obs.shape[-1])
    x = state.scaler.observation(flat)
    repeated, candidates = _candidates(vae_net, actor_net, state.vae.params, state.actor.params, x, n, key)
    q1 = critic_net.apply(state.critic.params, repeated, candidates)[0].reshape(-1, n)
    best = jnp.take_along_axis(candidates.reshape(-1, n, state.act_dim), jnp.argmax(q1, axis=1)[:, None, None],
                               axis=1)[:, 0]
    return state.scaler.from_unit_action(best).reshape(obs.shape[:-1] + (state.act_dim,))
