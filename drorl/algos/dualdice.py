"""DualDICE (Nachum, Chow, Dai, Li 2019): the stationary-distribution ratio w = d^pi / d^D of a
target policy pi, estimated from fixed data alone, for continuous (or one-hot) actions.

With f(x) = |x|^p / p and its conjugate f*(y) = |y|^q / q (q = p / (p - 1)),

    J(nu, zeta) = E_D[ (nu(s, a) - g nu(s', a')) zeta(s, a) - f*(zeta(s, a)) ] - (1 - g) E_{s0}[nu(s0, a0)],
    a' ~ pi(s'),  a0 ~ pi(s0);   nu minimises J, zeta maximises it;   w = zeta at the saddle point.

(For fixed nu the inner maximum is E_D[f(nu - g B^pi nu)] with zeta = f'(nu - g B^pi nu), whose first-
order condition in nu gives f'(nu - g B^pi nu) = d^pi / d^D.) The policy's value follows as
E_D[w r] / (1 - g). Defaults: dice_rl's continuous-action estimator (64-64 ReLU, Adam 1e-4 for both
networks, gradient clipping at 1.0, p = 1.5, one sampled next action).

The caller supplies the target policy's actions in the batch: ``policy_next_actions`` (a' ~ pi(s'))
and ``policy_initial_actions`` (a0 ~ pi(s0)); OVR fills them with its current policy, and
``drorl.ope.estimate_policy_value`` (off-policy evaluation of any policy from a dataset) with the given one.
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
from drorl.nn.critics import Critic
from drorl.nn.train_state import TrainState


# metrics the health monitor (drorl.health) watches for drift, and what drifting means
DIAGNOSTICS = {"ratio_mean": "the estimated density ratio's mean drifts (at convergence it is the occupancy's mass, "
               "1 - E[g^T]: 1 when episodes only time out): the estimate is not converging"}


@dataclasses.dataclass(frozen=True)
class Config:
    """DualDICE hyper-parameters.

    Attributes:
        hidden_dims: widths of nu's and zeta's hidden layers.
        nu_lr: Adam learning rate of nu.
        zeta_lr: Adam learning rate of zeta.
        gamma: discount.
        p: exponent of f(x) = |x|^p / p (> 1).
        batch_size: transitions per update.
        max_grad_norm: gradient clipping (global norm) for both networks.
        positive: zeta = (network output)^2, so w >= 0 everywhere (dice_rl's ``zeta_pos``); the saddle point is
            unchanged, since the true ratio is non-negative, but the unconstrained zeta undershoots below 0
            on rows the policy rarely reaches (late steps of long episodes), biasing E_D[w r] down.
        lr_decay_steps: if > 0, both learning rates follow a cosine decay to 0 over this many updates (a
            fixed-budget off-policy evaluation settles on the saddle point instead of hovering around it);
            0 keeps them constant (the published default, and what OVR uses as its policy keeps moving).
    """

    hidden_dims: tuple[int, ...] = (64, 64)
    nu_lr: float = 1e-4
    zeta_lr: float = 1e-4
    gamma: float = 0.99
    p: float = 1.5
    batch_size: int = 256
    max_grad_norm: float = 1.0
    positive: bool = False
    lr_decay_steps: int = 0


@flax.struct.dataclass
class State:
    nu: TrainState
    zeta: TrainState
    scaler: Scaler
    step: jnp.ndarray
    config: Config = flax.struct.field(pytree_node=False)


def _optimizer(lr: float, config: Config) -> optax.GradientTransformation:
    schedule = optax.cosine_decay_schedule(lr, config.lr_decay_steps) if config.lr_decay_steps > 0 else lr
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(schedule))


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    k_nu, k_zeta = jax.random.split(key)
    obs, act = jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.act_dim))
    net = Critic(config.hidden_dims)
    return State(nu=TrainState.create(net.init(k_nu, obs, act), _optimizer(config.nu_lr, config)),
                 zeta=TrainState.create(net.init(k_zeta, obs, act), _optimizer(config.zeta_lr, config)),
                 scaler=Scaler.from_spec(spec), step=jnp.zeros((), jnp.int32), config=config)


def power_conjugate(y: jnp.ndarray, p: float) -> jnp.ndarray:
    """f*(y) = |y|^q / q, q = p / (p - 1): the convex conjugate of f(x) = |x|^p / p."""
    q = p / (p - 1.0)
    return jnp.abs(y) ** q / q


def dualdice_objective(nu: jnp.ndarray, nu_next: jnp.ndarray, nu_initial: jnp.ndarray, zeta: jnp.ndarray,
                       gamma: float, p: float, probabilities: jnp.ndarray | None = None) -> jnp.ndarray:
    """J(nu, zeta) = E_D[(nu - g nu') zeta - f*(zeta)] - (1 - g) E[nu(s0, a0)]   (DualDICE, Eq. 12).

    Expectations over D are sample means, or sums weighted by ``probabilities`` (exact, tabular).
    """
    inner = (nu - gamma * nu_next) * zeta - power_conjugate(zeta, p)
    expectation = jnp.mean(inner) if probabilities is None else jnp.sum(probabilities * inner)
    return expectation - (1.0 - gamma) * jnp.mean(nu_initial)


def _zeta(config: Config, params: Any, obs: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
    """zeta(s, a) on scaled inputs: the network's output, squared when ``config.positive``."""
    out = Critic(config.hidden_dims).apply(params, obs, actions)
    return out**2 if config.positive else out


def _inputs(state: State, batch: dict[str, jnp.ndarray]) -> tuple:
    s = state.scaler
    return (s.observation(batch["observations"]), s.to_unit_action(batch["actions"]),
            s.observation(batch["next_observations"]), s.to_unit_action(batch["policy_next_actions"]),
            s.observation(batch["initial_observations"]), s.to_unit_action(batch["policy_initial_actions"]))


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array) -> tuple[State, dict]:
    """One simultaneous gradient step: descent for nu, ascent for zeta."""
    del key
    config = state.config
    net = Critic(config.hidden_dims)
    obs, act, next_obs, next_act, init_obs, init_act = _inputs(state, batch)
    continues = 1.0 - batch["terminals"]

    def objective(nu_params, zeta_params):
        nu = net.apply(nu_params, obs, act)
        nu_next = continues * net.apply(nu_params, next_obs, next_act)
        nu_init = net.apply(nu_params, init_obs, init_act)
        zeta = _zeta(config, zeta_params, obs, act)
        return dualdice_objective(nu, nu_next, nu_init, zeta, config.gamma, config.p), zeta

    # simultaneous: both gradients at the current (nu, zeta); zeta ascends
    (value, zeta), (nu_grad, zeta_grad) = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
        state.nu.params, state.zeta.params)
    metrics = {"objective": value, "ratio_mean": jnp.mean(zeta), "ratio_std": jnp.std(zeta),
               "ratio_min": jnp.min(zeta), "ratio_max": jnp.max(zeta),
               "value_estimate": jnp.mean(zeta * batch["rewards"]) / (1.0 - config.gamma)}
    return state.replace(nu=state.nu.apply_gradients(nu_grad),
                         zeta=state.zeta.apply_gradients(jax.tree_util.tree_map(jnp.negative, zeta_grad)),
                         step=state.step + 1), metrics


def ratio(state: State, obs: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
    """The estimated w(s, a) = d^pi(s, a) / d^D(s, a)."""
    s = state.scaler
    return _zeta(state.config, state.zeta.params, s.observation(obs), s.to_unit_action(actions))


def value_estimate(weights: jnp.ndarray, rewards: jnp.ndarray, gamma: float) -> jnp.ndarray:
    """V^pi(mu0) = E_D[w r] / (1 - g): the normalised occupancy turns per-step rewards into the value."""
    return jnp.mean(weights * rewards) / (1.0 - gamma)


TargetPolicy = Callable[[jnp.ndarray, jax.Array], jnp.ndarray]  # (observations [B, obs], key) -> actions [B, act]


def update_for_policy(state: State, batch: dict[str, jnp.ndarray], key: jax.Array,
                      target_policy: TargetPolicy) -> tuple[State, dict]:
    """``update`` with the batch's target-policy actions at s' and s0 sampled from ``target_policy``."""
    k_next, k_init = jax.random.split(key)
    batch = {**batch, "policy_next_actions": target_policy(batch["next_observations"], k_next),
             "policy_initial_actions": target_policy(batch["initial_observations"], k_init)}
    return update(state, batch, key)
