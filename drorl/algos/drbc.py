"""DR-BC: distributionally robust behaviour cloning (Panaganti, Xu, Kalathil, Ghavamzadeh, CDC 2023).

The imitation loss is minimised against the worst distribution in a total-variation ball of
radius rho around the data distribution. Its dual is

    min_theta min_eta  E[(l - eta)_+] + rho (max l - eta)_+ + eta,      l = l_pi(s, a)

convex and piecewise linear in eta; for rho < 1 its minimiser is the rho-quantile of the batch
losses, so eta has a closed form. ``eta="argmin"`` (default) uses it. ``eta="original"``
reproduces the published code, which passed the minimum *value* of the dual as eta, so that only
samples with a loss above that value carry gradient.

Network, optimiser and data handling are BC's (``drorl.algos.bc.PolicyConfig``); only the loss differs.
Published radii: 0.2 / 0.3 / 0.5 / 0.6 for hopper / halfcheetah / walker2d / ant.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import flax.struct
import jax
import jax.numpy as jnp
import optax

from drorl.algos import bc
from drorl.algos.bc import act, per_sample_imitation_loss
from drorl.algos.base import Scaler, Spec
from drorl.nn.train_state import TrainState, gradient_step


@dataclasses.dataclass(frozen=True)
class Config:
    """BC's policy plus the radius and the choice of eta.

    Attributes:
        policy: the policy network and its optimiser (BC's).
        batch_size: transitions per update.
        rho: radius of the total-variation ball (0 < rho < 1).
        eta: "argmin" (the dual's minimiser, the rho-quantile of the batch losses) or "original"
            (the dual's minimum value, as in the published code).
    """

    policy: bc.PolicyConfig = bc.PolicyConfig()
    batch_size: int = 256
    rho: float = 0.2
    eta: Literal["argmin", "original"] = "argmin"


@flax.struct.dataclass
class State:
    policy: TrainState
    scaler: Scaler
    step: jnp.ndarray
    config: Config = flax.struct.field(pytree_node=False)
    act_dim: int = flax.struct.field(pytree_node=False)


def tv_dual_objective(losses: jnp.ndarray, eta: jnp.ndarray, rho: float) -> jnp.ndarray:
    """g(eta) = E[(l - eta)_+] + rho (max l - eta)_+ + eta: the TV-ball dual (DR-BC, Eq. 5)."""
    return jnp.mean(jax.nn.relu(losses - eta)) + rho * jax.nn.relu(jnp.max(losses) - eta) + eta


def tv_dual_argmin(losses: jnp.ndarray, rho: float) -> jnp.ndarray:
    """argmin_eta g(eta): the rho-quantile of the losses.

    Below max l the slope of g is 1 - rho - P(l > eta); it turns non-negative at the order statistic
    l_(j), j = n - ceil((1 - rho) n), the first with at most (1 - rho) n losses above it.
    """
    ordered = jnp.sort(losses)
    n = losses.shape[0]
    k = jnp.clip(jnp.ceil((1.0 - rho) * n).astype(jnp.int32), 1, n)
    return ordered[n - k]


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    return State(policy=bc.init_policy(config.policy, spec, key), scaler=Scaler.from_spec(spec),
                 step=jnp.zeros((), jnp.int32), config=config, act_dim=spec.act_dim)


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array) -> tuple[State, dict]:
    del key
    config = state.config
    obs = state.scaler.observation(batch["observations"])
    target = state.scaler.to_unit_action(batch["actions"])

    def loss_fn(params):
        losses = per_sample_imitation_loss(config.policy, state.act_dim, params, obs, target)
        frozen = jax.lax.stop_gradient(losses)
        eta = tv_dual_argmin(frozen, config.rho)
        if config.eta == "original":
            eta = tv_dual_objective(frozen, eta, config.rho)
        return tv_dual_objective(losses, eta, config.rho), (losses, eta)

    policy, (loss, (losses, eta)), grads = gradient_step(state.policy, loss_fn, has_aux=True)
    metrics = {"loss": loss, "eta": eta, "bc_loss": jnp.mean(losses), "max_loss": jnp.max(losses),
               "active_fraction": jnp.mean(losses > eta), "grad_norm": optax.tree.norm(grads)}
    return state.replace(policy=policy, step=state.step + 1), metrics


__all__ = ["Config", "State", "init", "update", "act", "tv_dual_objective", "tv_dual_argmin"]
