"""COMBO: conservative offline model-based policy optimisation (Yu et al. 2021; Eq. 8-10 of the DROMO paper).

SAC (drorl.algos.sac: its networks, actor, temperature and target update) on batches that mix real
and model transitions (drorl.algos.model_based), with a critic that pushes Q down on model data and
up on the dataset's pairs (Eq. 8):

    beta (E_rho[Q] - E_D[Q]) + E_{d_f}[(Q - B^pi Qbar)^2]

(the squared error without Eq. 8's 1/2, as public code scales beta). ``push_down="expectation"``
takes E_rho[Q] literally: Q at the push-down states with the current policy's actions. The default
``"logsumexp"`` is the practical form public code runs (OfflineRL-Kit, whose scores the spec quotes):
at each push-down state s, log sum exp over 3 N importance-corrected actions, Q(s, a) - log(0.5^|A|)
for N uniform actions, Q(s, a) - log pi(a|s) for N policy actions at s, Q(s, a') - log pi(a'|s') for
N policy actions drawn at the row's next state s'. The push-down states are the whole mixed batch
(``push_down_states="mix"``, OfflineRL-Kit) or its model rows only (``"model"``, d3rlpy); the
target is the target critics' minimum at a' ~ pi(.|s') without the entropy term
(``deterministic_backup``). The actor's states are the mixed batch's (d_f, as Algorithm 1 of the
DROMO paper and public code; its Eq. 14 writes rho).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp

from drorl.algos import model_based, sac
from drorl.algos.base import Spec
from drorl.nn.policies import tanh_gaussian_sample_and_log_prob
from drorl.nn.train_state import gradient_step


@dataclasses.dataclass(frozen=True)
class Config:
    """COMBO's hyper-parameters (defaults: OfflineRL-Kit's COMBO, spec/model-based.md).

    Attributes:
        model: the dynamics ensemble, rollouts and real ratio f (0.5).
        sac: the SAC actor-critic (3 x 256, actor lr 1e-4, critic lr 3e-4, learned temperature).
        beta: weight of the conservative term (5; 0.5 for halfcheetah-medium and medium-replay data).
        push_down: "logsumexp" (the practical, importance-corrected form) or "expectation" (Eq. 8).
        push_down_states: "mix" (every state of the batch) or "model" (its model rows only).
        num_sampled_actions: N, actions per kind (uniform, policy at s, policy at s') in the log-sum-exp.
        deterministic_backup: leave the entropy term out of the Bellman target.
    """

    model: model_based.ModelConfig = model_based.ModelConfig()
    sac: sac.Config = sac.Config(hidden_dims=(256, 256, 256), actor_lr=1e-4, critic_lr=3e-4)
    beta: float = 5.0
    push_down: Literal["logsumexp", "expectation"] = "logsumexp"
    push_down_states: Literal["mix", "model"] = "mix"
    num_sampled_actions: int = 10
    deterministic_backup: bool = True


State = model_based.State
prepare = model_based.prepare
sample = model_based.sample


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    return model_based.init_state(config, spec, key)


def conservative_gap(q_push_down: jnp.ndarray, push_down_weights: jnp.ndarray, q_data: jnp.ndarray,
                     data_weights: jnp.ndarray) -> jnp.ndarray:
    """E_rho[Q] - E_D[Q] per critic (Eq. 8's conservative term without beta): weighted means over the
    push-down values [C, N] and the dataset pairs' values [C, B]."""
    push_down = jnp.sum(q_push_down * push_down_weights, axis=-1) / jnp.sum(push_down_weights)
    return push_down - jnp.sum(q_data * data_weights, axis=-1) / jnp.sum(data_weights)


def importance_corrected_logsumexp(q: jnp.ndarray, log_density: jnp.ndarray) -> jnp.ndarray:
    """log sum_k exp(Q(s, a_k) - log p(a_k)) over the sampled actions' last axis: [C, N, K] -> [C, N]
    (the practical stand-in for E_rho[Q] in Eq. 8, as CQL(H) with importance sampling)."""
    return jax.scipy.special.logsumexp(q - log_density, axis=-1)


def _sampled_actions(agent: sac.State, obs: jnp.ndarray, next_obs: jnp.ndarray, n: int, key: jax.Array
                     ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """3 n actions per state [B, 3n, A] and their log-densities [B, 3n]: uniform, pi at s, pi at s'."""
    actor_net, _ = sac.networks(agent.config, agent.act_dim)
    k_uniform, k_here, k_next = jax.random.split(key, 3)
    batch, act_dim = obs.shape[0], agent.act_dim
    uniform = jax.random.uniform(k_uniform, (batch, n, act_dim), minval=-1.0, maxval=1.0)

    def policy(states, k):
        mean, log_std = actor_net.apply(agent.actor.params, states)
        tile = lambda x: jnp.broadcast_to(x[:, None], (batch, n, act_dim))  # noqa: E731
        return tanh_gaussian_sample_and_log_prob(tile(mean), tile(log_std), k)

    (here, log_here), (there, log_there) = policy(obs, k_here), policy(next_obs, k_next)
    actions = jnp.concatenate([uniform, here, there], axis=1)
    log_density = jnp.concatenate([jnp.full((batch, n), act_dim * math.log(0.5)), log_here, log_there], axis=1)
    return jax.lax.stop_gradient(actions), jax.lax.stop_gradient(log_density)


def push_down_values(config: Config, agent: sac.State, params: Any, obs: jnp.ndarray, next_obs: jnp.ndarray,
                     key: jax.Array) -> jnp.ndarray:
    """Per critic and push-down state [C, B], the value that stands in for Q under rho."""
    _, critic_net = sac.networks(agent.config, agent.act_dim)
    n = config.num_sampled_actions if config.push_down == "logsumexp" else 1
    actions, log_density = _sampled_actions(agent, obs, next_obs, n, key)
    if config.push_down == "expectation":
        return critic_net.apply(params, obs, actions[:, n])  # one action of pi at s
    k = actions.shape[1]
    q = critic_net.apply(params, jnp.repeat(obs, k, axis=0), actions.reshape(-1, agent.act_dim))
    return importance_corrected_logsumexp(q.reshape(q.shape[0], -1, k), log_density)


def critic_step(config: Config, agent: sac.State, batch: dict, key: jax.Array,
                regulariser: Callable[[Any, jnp.ndarray, jnp.ndarray], tuple[jnp.ndarray, dict]] | None = None
                ) -> tuple[sac.State, dict]:
    """One step of COMBO's critic on a mixed batch; ``regulariser(params, obs, actions) -> (loss, metrics)``
    adds a term (DROMO's variance penalty)."""
    _, critic_net = sac.networks(agent.config, agent.act_dim)
    obs = agent.scaler.observation(batch["observations"])
    next_obs = agent.scaler.observation(batch["next_observations"])
    actions = agent.scaler.to_unit_action(batch["actions"])
    k_next, k_push = jax.random.split(key)
    next_v = sac.next_value(agent, next_obs, k_next, entropy_bonus=not config.deterministic_backup)
    target = jax.lax.stop_gradient(batch["rewards"] + agent.config.gamma * (1.0 - batch["terminals"]) * next_v)
    push_weights = jnp.ones_like(batch["is_real"]) if config.push_down_states == "mix" else 1.0 - batch["is_real"]

    def objective(params):
        q = critic_net.apply(params, obs, actions)
        gap = conservative_gap(push_down_values(config, agent, params, obs, next_obs, k_push), push_weights,
                               q, batch["is_real"])
        extra, extra_metrics = (0.0, {}) if regulariser is None else regulariser(params, obs, actions)
        loss = sac.critic_loss(q, target) + config.beta * gap.sum() + extra
        return loss, {"q_mean": jnp.mean(q), "conservative_gap": jnp.mean(gap), **extra_metrics}

    critic, (loss, metrics), _ = gradient_step(agent.critic, objective, has_aux=True)
    return agent.replace(critic=critic), {"critic_loss": loss, "target_mean": jnp.mean(target), **metrics}


def update_with(state: State, batch: dict, key: jax.Array, regulariser=None) -> tuple[State, dict, dict]:
    """COMBO's update with an optional critic regulariser; also returns the mixed batch it trained on."""
    config = state.config
    k_model, k_critic, k_policy = jax.random.split(key, 3)
    model_buffer, mixed, model_metrics = model_based.model_step(
        config.model, config.sac.batch_size, state.dynamics, state.model_buffer, state.task, state.agent, batch,
        k_model)
    agent, critic_metrics = critic_step(config, state.agent, mixed, k_critic, regulariser)
    agent, policy_metrics = sac.policy_step(agent, agent.scaler.observation(mixed["observations"]), k_policy)
    new_state = state.replace(agent=sac.update_target(agent), model_buffer=model_buffer)
    return new_state, {**critic_metrics, **policy_metrics, **model_metrics}, mixed


def update(state: State, batch: dict, key: jax.Array) -> tuple[State, dict]:
    new_state, metrics, _ = update_with(state, batch, key)
    return new_state, metrics


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    return sac.act(state.agent, obs, key, deterministic)
