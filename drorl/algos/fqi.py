"""Fitted Q iteration for discrete actions (Ernst, Geurts and Wehenkel 2005; neural, Riedmiller 2005).

Iteration k regresses Q_{k+1}(s, a) on the target r + g (1 - terminal) max_a' Q_k(s', a') over the batch
data. Here each iteration is ``iteration_steps`` minibatch gradient steps on the squared error, after which
the fitted network becomes the next iteration's target (a hard target update). No pessimism: the
baseline that trusts the data's coverage. Acting is greedy in Q (the same in both acting modes). The
regression step takes an optional penalty on the Q-values, which is how discrete CQL reuses it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from drorl.algos.base import Scaler, Spec
from drorl.errors import DrorlError
from drorl.nn.mlp import MLP
from drorl.nn.train_state import TrainState, gradient_step


# metrics the health monitor (drorl.health) watches for drift, and what drifting means
DIAGNOSTICS = {"q_mean": "Q diverges (bootstrapped maxima over actions the data do not take feeding on themselves)"}


@dataclasses.dataclass(frozen=True)
class Config:
    """FQI hyper-parameters.

    Attributes:
        hidden_dims: widths of the Q-network's hidden layers.
        lr: Adam learning rate.
        gamma: discount.
        batch_size: transitions per update.
        iteration_steps: gradient steps per Q iteration (then the target becomes the fitted network).
        max_grad_norm: gradient clipping (global norm).
    """

    hidden_dims: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    gamma: float = 0.99
    batch_size: int = 256
    iteration_steps: int = 250
    max_grad_norm: float = 10.0


@flax.struct.dataclass
class State:
    """A Q-network, its target copy and the iteration counter (FQI's state, and CQL's: ``config`` is the
    algorithm's Config)."""

    q: TrainState
    target_params: Any
    scaler: Scaler
    step: jnp.ndarray
    config: Any = flax.struct.field(pytree_node=False)
    num_actions: int = flax.struct.field(pytree_node=False)


def init_q(config: Config, spec: Spec, key: jax.Array, algorithm: str = "fqi") -> tuple[TrainState, Any]:
    """The Q-network's train state and its target copy."""
    if spec.num_actions is None:
        raise DrorlError(f"{algorithm}: needs a discrete task (Spec.num_actions); this spec has continuous actions")
    params = MLP(config.hidden_dims, spec.num_actions).init(key, jnp.zeros((1, spec.obs_dim), jnp.float32))
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr))
    return TrainState.create(params, optimizer), jax.tree.map(jnp.copy, params)


def init_state(q_config: Config, spec: Spec, key: jax.Array, config: Any, algorithm: str) -> State:
    """A fresh State whose Q-network follows ``q_config`` and which carries ``config`` (FQI's or CQL's)."""
    q, target_params = init_q(q_config, spec, key, algorithm)
    return State(q=q, target_params=target_params, scaler=Scaler.from_spec(spec), step=jnp.zeros((), jnp.int32),
                 config=config, num_actions=spec.num_actions)


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    return init_state(config, spec, key, config, "fqi")


def fitted_q_target(rewards: jnp.ndarray, terminals: jnp.ndarray, gamma: float, next_q: jnp.ndarray) -> jnp.ndarray:
    """y = r + g (1 - terminal) max_a' Q_k(s', a'): the regression target of one Q iteration."""
    return rewards + gamma * (1.0 - terminals) * jnp.max(next_q, axis=-1)


def regression_step(state: Any, batch: dict[str, jnp.ndarray], config: Config,
                    penalty: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray] | None = None) -> tuple[Any, dict]:
    """One gradient step on E[(Q(s, a) - y)^2] (+ ``penalty(q [B, A], actions [B])``), then the hard target
    update at the end of each iteration. ``state`` has FQI's fields (``q``, ``target_params``, ``scaler``,
    ``step``, ``num_actions``); ``config`` is its FQI config."""
    net = MLP(config.hidden_dims, state.num_actions)
    obs = state.scaler.observation(batch["observations"])
    actions = batch["actions"][:, 0].astype(jnp.int32)
    next_q = net.apply(state.target_params, state.scaler.observation(batch["next_observations"]))
    target = jax.lax.stop_gradient(fitted_q_target(batch["rewards"], batch["terminals"], config.gamma, next_q))

    def loss_fn(params):
        q = net.apply(params, obs)
        td = jnp.mean((jnp.take_along_axis(q, actions[:, None], axis=-1)[:, 0] - target) ** 2)
        extra = jnp.zeros(()) if penalty is None else penalty(q, actions)
        return td + extra, (td, extra, q)

    q, (_, (td, extra, q_values)), _ = gradient_step(state.q, loss_fn, has_aux=True)
    step = state.step + 1
    new_iteration = step % config.iteration_steps == 0
    target_params = jax.tree.map(lambda new, old: jnp.where(new_iteration, new, old), q.params, state.target_params)
    metrics = {"td_loss": td, "q_mean": jnp.mean(q_values), "target_mean": jnp.mean(target)}
    if penalty is not None:
        metrics["penalty"] = extra
    return state.replace(q=q, target_params=target_params, step=step), metrics


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array) -> tuple[State, dict]:
    del key  # FQI's step is deterministic given the batch
    return regression_step(state, batch, state.config)


def greedy_action(state: Any, obs: jnp.ndarray, config: Config) -> jnp.ndarray:
    """argmax_a Q(s, a) as one float column [..., 1] (FQI's and CQL's acting)."""
    q = MLP(config.hidden_dims, state.num_actions).apply(state.q.params, state.scaler.observation(obs))
    return jnp.argmax(q, axis=-1)[..., None].astype(jnp.float32)


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    """Greedy in Q in both modes (an offline policy has no exploration to do)."""
    del key, deterministic
    return greedy_action(state, obs, state.config)
