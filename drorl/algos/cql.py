"""Discrete conservative Q-learning, CQL(H) (Kumar, Zhou, Tucker and Levine 2020, Eq. 4).

Fitted Q iteration (``drorl.algos.fqi``, same network, target and regression) whose loss adds

    alpha E_{s ~ D}[ log sum_a exp Q(s, a) - Q(s, a_D) ],

which pushes Q down on actions the data does not take and up on those it does, so that the greedy policy
stays near the data's support. alpha = 1 is the paper's default for its discrete (Atari) experiments.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from drorl.algos import fqi
from drorl.algos.base import Spec
from drorl.data.sampling import uniform_batch


# metrics the health monitor (drorl.health) watches for drift, and what drifting means
DIAGNOSTICS = {"q_mean": "Q diverges (the conservative penalty is too weak for this data: raise alpha)"}


@dataclasses.dataclass(frozen=True)
class Config:
    """CQL hyper-parameters.

    Attributes:
        q: the fitted-Q-iteration part (network, optimiser, discount, batch, iteration length).
        alpha: weight of the conservative penalty.
    """

    q: fqi.Config = fqi.Config()
    alpha: float = 1.0


State = fqi.State


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    return fqi.init_state(config.q, spec, key, config, "cql")


def conservative_penalty(q: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
    """E_s[ logsumexp_a Q(s, a) - Q(s, a_D) ]: CQL(H)'s regulariser (Kumar et al. 2020, Eq. 4), q [B, A]."""
    taken = jnp.take_along_axis(q, actions[:, None], axis=-1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(q, axis=-1) - taken)


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array) -> tuple[State, dict]:
    del key  # CQL's discrete step is deterministic given the batch
    alpha = state.config.alpha
    return fqi.regression_step(state, batch, state.config.q,
                               lambda q, actions: alpha * conservative_penalty(q, actions))


def sample(data: dict[str, jax.Array], state: State, key: jax.Array) -> dict[str, jax.Array]:
    """Uniform rows, ``config.q.batch_size`` of them (the batch size lives in the nested FQI config)."""
    return uniform_batch(data, key, state.config.q.batch_size)


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    """Greedy in Q in both modes."""
    del key, deterministic
    return fqi.greedy_action(state, obs, state.config.q)
