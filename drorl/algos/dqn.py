"""Double DQN (van Hasselt et al. 2016) with a Huber loss and a Polyak-averaged target network.

Used online on CartPole to train the discrete behaviour policies of the Stackelberg experiments.
Actions are one float column holding the action index (drorl's layout for discrete tasks).
Exploration is epsilon-greedy with epsilon decaying linearly over the first updates.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from drorl.algos.base import Scaler, Spec
from drorl.errors import DrorlError
from drorl.nn.mlp import MLP
from drorl.nn.train_state import TrainState, gradient_step


@dataclasses.dataclass(frozen=True)
class Config:
    """DQN hyper-parameters.

    Attributes:
        hidden_dims: widths of the Q-network's hidden layers.
        lr: Adam learning rate.
        gamma: discount.
        tau: Polyak rate of the target network (1.0 with a period would be the hard update).
        batch_size: transitions per update.
        epsilon_start: exploration rate at the first update.
        epsilon_end: exploration rate after the decay.
        epsilon_decay_updates: updates over which epsilon decays linearly.
        max_grad_norm: gradient clipping (global norm).
    """

    hidden_dims: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 128
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_updates: int = 20_000
    max_grad_norm: float = 10.0


@flax.struct.dataclass
class State:
    q: TrainState
    target_params: Any
    scaler: Scaler
    step: jnp.ndarray
    config: Config = flax.struct.field(pytree_node=False)
    num_actions: int = flax.struct.field(pytree_node=False)


def q_network(config: Config, num_actions: int) -> MLP:
    return MLP(config.hidden_dims, num_actions)


def optimizer(config: Config) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr))


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    if spec.num_actions is None:
        raise DrorlError("dqn: needs a discrete task (Spec.num_actions); this spec has continuous actions")
    params = q_network(config, spec.num_actions).init(key, jnp.zeros((1, spec.obs_dim), jnp.float32))
    return State(q=TrainState.create(params, optimizer(config)),
                 target_params=jax.tree_util.tree_map(jnp.copy, params), scaler=Scaler.from_spec(spec),
                 step=jnp.zeros((), jnp.int32), config=config, num_actions=spec.num_actions)


def double_q_target(rewards: jnp.ndarray, terminals: jnp.ndarray, gamma: float, next_q_online: jnp.ndarray,
                    next_q_target: jnp.ndarray) -> jnp.ndarray:
    """y = r + gamma (1 - d) Qbar(s', argmax_a Q(s', a)): the online net picks, the target net scores."""
    best = jnp.argmax(next_q_online, axis=-1)
    return rewards + gamma * (1.0 - terminals) * jnp.take_along_axis(next_q_target, best[:, None], axis=-1)[:, 0]


def td_loss(q_taken: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """E[ Huber(Q(s, a) - y) ] with the Huber threshold at 1."""
    return jnp.mean(optax.huber_loss(q_taken, jax.lax.stop_gradient(target)))


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array) -> tuple[State, dict]:
    del key
    net = q_network(state.config, state.num_actions)
    obs = state.scaler.observation(batch["observations"])
    next_obs = state.scaler.observation(batch["next_observations"])
    actions = batch["actions"][:, 0].astype(jnp.int32)
    target = double_q_target(batch["rewards"], batch["terminals"], state.config.gamma,
                             net.apply(state.q.params, next_obs), net.apply(state.target_params, next_obs))

    def loss_fn(params):
        q = net.apply(params, obs)
        q_taken = jnp.take_along_axis(q, actions[:, None], axis=-1)[:, 0]
        return td_loss(q_taken, target), q_taken

    q, (loss, q_taken), _ = gradient_step(state.q, loss_fn, has_aux=True)
    target_params = optax.incremental_update(q.params, state.target_params, state.config.tau)
    metrics = {"td_loss": loss, "q_mean": jnp.mean(q_taken), "epsilon": epsilon(state.config, state.step)}
    return state.replace(q=q, target_params=target_params, step=state.step + 1), metrics


def policy_params(state: State) -> Any:
    """The parameters that act (what the zoo ships)."""
    return state.q.params


def with_policy_params(state: State, params: Any) -> State:
    return state.replace(q=state.q.replace(params=params))


def epsilon(config: Config, step: jnp.ndarray) -> jnp.ndarray:
    fraction = jnp.clip(step / max(config.epsilon_decay_updates, 1), 0.0, 1.0)
    return config.epsilon_start + fraction * (config.epsilon_end - config.epsilon_start)


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    """Greedy action (deterministic) or epsilon-greedy, as one float column [..., 1]."""
    q = q_network(state.config, state.num_actions).apply(state.q.params, state.scaler.observation(obs))
    greedy = jnp.argmax(q, axis=-1)
    if not deterministic:
        k_explore, k_action = jax.random.split(key)
        explore = jax.random.uniform(k_explore, greedy.shape) < epsilon(state.config, state.step)
        greedy = jnp.where(explore, jax.random.randint(k_action, greedy.shape, 0, state.num_actions), greedy)
    return greedy[..., None].astype(jnp.float32)
