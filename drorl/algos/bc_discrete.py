"""Behaviour cloning for discrete actions: a categorical policy (softmax over action logits) trained by the
negative log-likelihood of the data's actions. The discrete counterpart of ``drorl.algos.bc``, whose
policies act in a continuous box; acting takes the most likely action (deterministic) or samples.
"""

from __future__ import annotations

import dataclasses

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
    """Discrete BC hyper-parameters.

    Attributes:
        hidden_dims: widths of the policy's hidden layers.
        lr: Adam learning rate.
        batch_size: transitions per update.
    """

    hidden_dims: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    batch_size: int = 256


@flax.struct.dataclass
class State:
    policy: TrainState
    scaler: Scaler
    step: jnp.ndarray
    config: Config = flax.struct.field(pytree_node=False)
    num_actions: int = flax.struct.field(pytree_node=False)


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    if spec.num_actions is None:
        raise DrorlError("bc-discrete: needs a discrete task (Spec.num_actions); use bc for continuous actions")
    params = MLP(config.hidden_dims, spec.num_actions).init(key, jnp.zeros((1, spec.obs_dim), jnp.float32))
    return State(policy=TrainState.create(params, optax.adam(config.lr)), scaler=Scaler.from_spec(spec),
                 step=jnp.zeros((), jnp.int32), config=config, num_actions=spec.num_actions)


def imitation_loss(logits: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
    """E_D[ -log pi(a|s) ] for logits [B, A] and action indices [B]."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, actions))


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array) -> tuple[State, dict]:
    del key  # deterministic given the batch
    net = MLP(state.config.hidden_dims, state.num_actions)
    obs = state.scaler.observation(batch["observations"])
    actions = batch["actions"][:, 0].astype(jnp.int32)

    def loss_fn(params):
        logits = net.apply(params, obs)
        return imitation_loss(logits, actions), jnp.mean(jnp.argmax(logits, axis=-1) == actions)

    policy, (loss, accuracy), _ = gradient_step(state.policy, loss_fn, has_aux=True)
    return state.replace(policy=policy, step=state.step + 1), {"loss": loss, "accuracy": accuracy}


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    """The most likely action (deterministic) or a sample, as one float column [..., 1]."""
    logits = MLP(state.config.hidden_dims, state.num_actions).apply(state.policy.params, state.scaler.observation(obs))
    index = jnp.argmax(logits, axis=-1) if deterministic else jax.random.categorical(key, logits)
    return index[..., None].astype(jnp.float32)
