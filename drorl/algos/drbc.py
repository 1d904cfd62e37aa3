"""DR-BC: distributionally robust behaviour cloning (Panaganti, Xu, Kalathil, Ghavamzadeh, CDC 2023).

The imitation loss is minimised against the worst distribution in a total-variation ball of
radius rho around the data distribution. Its dual is

    min_theta min_eta  E[(l - eta)_+] + rho (max l - eta)_+ + eta,      l = l_pi(s, a)

convex and piecewise linear in eta; for rho < 1 its minimiser is the rho-quantile of the batch
losses, so eta has a closed form. ``eta="argmin"`` (default) uses it. ``eta="original"``
reproduces the published code, which passed the minimum *value* of the dual as eta, so that only
samples with a loss above that value carry gradient.

Network, optimiser and data handling are BC's (``drorl.algos.bc``); only the loss differs.
Published radii: 0.2 / 0.3 / 0.5 / 0.6 for hopper / halfcheetah / walker2d / ant.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import optax

from drorl.algos import bc
from drorl.algos.bc import State, act, per_sample_imitation_loss
from drorl.algos.base import Spec


@dataclasses.dataclass(frozen=True)
class Config(bc.Config):
    """BC's fields plus the radius and the choice of eta.

    Attributes:
        rho: radius of the total-variation ball (0 < rho < 1).
        eta: "argmin" (the dual's minimiser, the rho-quantile of the batch losses) or "original"
            (the dual's minimum value, as in the published code).
    """

    rho: float = 0.2
    eta: Literal["argmin", "original"] = "argmin"


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
    return bc.init(config, spec, key)


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array) -> tuple[State, dict]:
    del key
    config = state.config
    obs = state.scaler.observation(batch["observations"])
    target = state.scaler.to_unit_action(batch["actions"])

    def loss_fn(params):
        losses = per_sample_imitation_loss(config, state.act_dim, params, obs, target)
        frozen = jax.lax.stop_gradient(losses)
        eta = tv_dual_argmin(frozen, config.rho)
        if config.eta == "original":
            eta = tv_dual_objective(frozen, eta, config.rho)
        return tv_dual_objective(losses, eta, config.rho), (losses, eta)

    (loss, (losses, eta)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = bc.optimizer(config).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "eta": eta, "bc_loss": jnp.mean(losses), "max_loss": jnp.max(losses),
               "active_fraction": jnp.mean(losses > eta), "grad_norm": optax.tree.norm(grads)}
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics


__all__ = ["Config", "State", "init", "update", "act", "tv_dual_objective", "tv_dual_argmin"]
