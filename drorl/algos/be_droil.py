"""BE-DROIL: balance-equation-based distributionally robust offline imitation learning
(Agrawal, Alvi, Jain, Nayyar 2025; the derivation is in ``spec/robust-imitation.md``).

The imitation loss is minimised against the worst triplet occupancy d(s, a, s') in an
f-divergence ball of radius rho around the expert's, subject to the balance (Bellman-flow)
equation. With multipliers Q(s, a) (balance) and tau >= 0 (divergence) and w = d / d_D:

    L(w; Q, tau) = (1 - g) E_{s0, a0}[Q(s0, a0)] + E_D[ w e - tau f(w) ] + tau rho           (Eq. 11)
    e(s, a, s') = l_pi(s, a) + g E_{a' ~ pi_D(s')}[Q(s', a')] - Q(s, a)                       (Eq. 10)
    w* = max(0, (f')^{-1}(e / tau))                                                           (Prop. 1)

and the two-stage procedure of Eq. 12, alternated one gradient step each:

    (Q, tau) <- argmin_{Q, tau >= 0} L(w*; Q, tau)        (w* held fixed: Danskin)
    pi       <- argmin_pi E_D[ stopgrad(w*) l_pi(s, a) ]

Expectations under d_D (``occupancy``, a config option). The ball is centred on the expert's
*discounted* occupancy, and strong duality needs w = 1 (d_D itself) to be strictly feasible. The
default ``"discounted"`` samples step t of episode i with probability (1 - g) g^t / (N (1 - g^T_i))
(``drorl.data.sampling.discounted_batch``) and sends the mass past each episode's last row back to
that episode's first pair (a renewal: Q(s0_i, a0_i) is the next pair there, whether the episode was
cut by a time limit or ended in a terminal), so the balance equation holds exactly at w = 1 on any
set of demonstrations and the empirical d_D sums to one. ``"uniform"`` samples rows uniformly: the
time-averaged occupancy, for which w = 1 is not feasible under the discounted balance equation
(on distinct states only w_t = T (1 - g) g^t is); kept as an option for the runs made with it.
Under ``"uniform"``, a' is the recorded next action, pi(s') where a time limit cut the trajectory,
and the term is zero after a true terminal.

Other choices (config options): tau = softplus(raw tau); the initial-state term uses each
trajectory's first state and recorded action, episodes drawn uniformly (``initial_states="first"``;
``"all"`` uses every batch pair instead, see Config); the policy step uses the weights recomputed
after the dual step. ``balance=False`` is the "Q = 0" ablation: plain f-divergence DRO on the loss
with a scalar multiplier lambda for E[w] = 1, w* = max(0, (f')^{-1}((l - lambda)/tau)).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import flax.struct
import jax
import jax.numpy as jnp
import optax

from drorl.algos import bc
from drorl.algos.base import Scaler, Spec
from drorl.data.sampling import discounted_batch, uniform_batch
from drorl.nn.critics import Critic
from drorl.nn.train_state import TrainState, gradient_step
from drorl.robust.divergences import Divergence, get_divergence


# metrics the health monitor (drorl.health) watches for drift, and what drifting means
DIAGNOSTICS = {
    "tau": "the divergence ball's multiplier runs away: the ball constraint cannot be met (is w = 1 feasible "
           "under this occupancy?)",
    "q_initial": "Q at initial states runs away: the balance equation is not being solved",
    "effective_sample_fraction": "the worst-case weights collapse onto a few transitions",
}


@dataclasses.dataclass(frozen=True)
class Config:
    """BC's policy plus the robust dual's fields.

    Attributes:
        policy: the policy network and its optimiser (BC's).
        batch_size: transitions per update.
        rho: radius of the f-divergence ball (one value across tasks is the paper's claim).
        divergence: "softtv" (default), "kl" or "chi2".
        gamma: discount of the occupancy measure.
        balance: keep the balance equation (False: the "Q = 0" ablation).
        q_hidden_dims: widths of Q's hidden layers.
        q_lr: Adam learning rate of Q (and of lambda without the balance equation).
        q_weight_decay: decoupled weight decay of Q's parameters (AdamW; 0: plain Adam). A smaller Q class
            leaves the balance equation less exactly enforced, which is where the adversary's room to
            reweight distinct demonstration states comes from (docs/results/be-droil-capacity.md).
        tau_lr: Adam learning rate of the raw temperature.
        init_tau: initial tau.
        max_weight: cap on w* (SoftTV's inverse derivative diverges at y = 1/2).
        initial_states: the (s0, a0) of the initial-state term. "first": each trajectory's first pair
            (the spec). "all": every batch pair, i.e. the occupancy of restarts from the data. Why
            it mattered under ``occupancy="uniform"``: uniform samples of long trajectories are the
            expert's time-averaged occupancy; with "first", the balance equation on one trajectory of
            length T then admits only w_t = T (1 - g) g^t, with "all" only w_t = 1 - g^(t+1).
        occupancy: how E_D is estimated: "discounted" (the expert's discounted occupancy, default)
            or "uniform" (rows uniformly: the time-averaged occupancy; the runs before this option).
    """

    policy: bc.PolicyConfig = bc.PolicyConfig()
    batch_size: int = 256
    rho: float = 0.3
    divergence: Literal["softtv", "kl", "chi2"] = "softtv"
    gamma: float = 0.99
    balance: bool = True
    q_hidden_dims: tuple[int, ...] = (256, 256)
    q_lr: float = 3e-4
    q_weight_decay: float = 0.0
    tau_lr: float = 1e-3
    init_tau: float = 1.0
    max_weight: float = 10.0
    initial_states: Literal["first", "all"] = "first"
    occupancy: Literal["discounted", "uniform"] = "discounted"


@flax.struct.dataclass
class State:
    policy: TrainState
    dual: TrainState  # params {"q": Q's, "tau_raw": .., "lam": the E[w] = 1 multiplier of balance=False}
    scaler: Scaler
    step: jnp.ndarray
    config: Config = flax.struct.field(pytree_node=False)
    act_dim: int = flax.struct.field(pytree_node=False)


def tau_of(tau_raw: jnp.ndarray) -> jnp.ndarray:
    return jax.nn.softplus(tau_raw)


def _inverse_softplus(x: float) -> jnp.ndarray:
    return jnp.log(jnp.expm1(jnp.asarray(x, jnp.float32)))


def _dual_optimizer(config: Config) -> optax.GradientTransformation:
    q_optimizer = (optax.adamw(config.q_lr, weight_decay=config.q_weight_decay) if config.q_weight_decay > 0
                   else optax.adam(config.q_lr))
    return optax.multi_transform({"q": q_optimizer, "tau_raw": optax.adam(config.tau_lr),
                                  "lam": optax.adam(config.q_lr)}, {"q": "q", "tau_raw": "tau_raw", "lam": "lam"})


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    k_policy, k_q = jax.random.split(key)
    q_params = Critic(config.q_hidden_dims).init(k_q, jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.act_dim)))
    dual = {"q": q_params, "tau_raw": _inverse_softplus(config.init_tau), "lam": jnp.zeros((), jnp.float32)}
    return State(policy=bc.init_policy(config.policy, spec, k_policy),
                 dual=TrainState.create(dual, _dual_optimizer(config)), scaler=Scaler.from_spec(spec),
                 step=jnp.zeros((), jnp.int32), config=config, act_dim=spec.act_dim)


def balance_residual(loss: jnp.ndarray, q: jnp.ndarray, q_next: jnp.ndarray, continues: jnp.ndarray,
                     gamma: float) -> jnp.ndarray:
    """e(s, a, s') = l(s, a) + g (1 - done) Q(s', a') - Q(s, a)   (Eq. 10)."""
    return loss + gamma * continues * q_next - q


def worst_case_weights(residual: jnp.ndarray, tau: jnp.ndarray, divergence: Divergence,
                       max_weight: float) -> jnp.ndarray:
    """w* = max(0, (f')^{-1}(e / tau)), held fixed (stop-gradient) in both steps   (Prop. 1)."""
    return jax.lax.stop_gradient(divergence.worst_case_weight(residual / tau, max_weight))


def dual_objective(q_initial: jnp.ndarray, residual: jnp.ndarray, weights: jnp.ndarray, tau: jnp.ndarray,
                   rho: float, gamma: float, divergence: Divergence,
                   probabilities: jnp.ndarray | None = None) -> jnp.ndarray:
    """L(w; Q, tau) = (1 - g) E[Q(s0, a0)] + E_D[w e - tau f(w)] + tau rho   (Eq. 11).

    Expectations are sample means, or sums weighted by ``probabilities`` (exact, tabular).
    """
    inner = weights * residual - tau * divergence.f(weights)
    expectation = jnp.mean(inner) if probabilities is None else jnp.sum(probabilities * inner)
    return (1.0 - gamma) * jnp.mean(q_initial) + expectation + tau * rho


def normalised_dual_objective(losses: jnp.ndarray, weights: jnp.ndarray, lam: jnp.ndarray, tau: jnp.ndarray,
                              rho: float, divergence: Divergence) -> jnp.ndarray:
    """Without the balance equation: lam + E_D[w (l - lam) - tau f(w)] + tau rho ("Q = 0" ablation)."""
    return lam + jnp.mean(weights * (losses - lam) - tau * divergence.f(weights)) + tau * rho


def weighted_imitation_loss(weights: jnp.ndarray, losses: jnp.ndarray) -> jnp.ndarray:
    """E_D[ stopgrad(w*) l_pi(s, a) ]: the policy step of Eq. 12."""
    return jnp.mean(jax.lax.stop_gradient(weights) * losses)


def sample(data: dict[str, jnp.ndarray], state: State, key: jax.Array) -> dict[str, jnp.ndarray]:
    """A batch from the expert's discounted occupancy (default) or uniform rows (``occupancy``)."""
    config = state.config
    if config.occupancy == "uniform":
        return uniform_batch(data, key, config.batch_size)
    return discounted_batch(data, key, config.batch_size, config.gamma)


def next_pair(state: State, batch: dict) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(s', a', continues) of the balance equation's next term, unscaled.

    Discounted occupancy: the recorded next pair, or the episode's first pair after its last row (the
    renewal that keeps w = 1 feasible). Uniform: the recorded next action, or pi(s') where a time
    limit cut the trajectory; zero after a true terminal.
    """
    goes_on = batch["has_next_action"][:, None] > 0
    if state.config.occupancy == "discounted":
        next_obs = jnp.where(goes_on, batch["next_observations"], batch["restart_observations"])
        next_actions = jnp.where(goes_on, batch["next_actions"], batch["restart_actions"])
        return next_obs, next_actions, jnp.ones_like(batch["terminals"])
    policy_next = jax.lax.stop_gradient(bc.act(state, batch["next_observations"], jax.random.PRNGKey(0), True))
    next_actions = jnp.where(goes_on, batch["next_actions"], policy_next)
    return batch["next_observations"], next_actions, 1.0 - batch["terminals"]


def residual_and_weights(state: State, dual: dict, batch: dict[str, jnp.ndarray],
                         losses: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The residual e (Eq. 10; l - lambda without the balance equation) and w* (Prop. 1) of every
    transition of ``batch``, for the dual variables ``dual`` ({"q", "tau_raw", "lam"}) and the
    per-sample imitation losses ``losses`` (held fixed)."""
    config = state.config
    if config.balance:
        obs = state.scaler.observation(batch["observations"])
        q = Critic(config.q_hidden_dims).apply(dual["q"], obs, state.scaler.to_unit_action(batch["actions"]))
        next_obs, next_actions, continues = next_pair(state, batch)
        q_next = Critic(config.q_hidden_dims).apply(dual["q"], state.scaler.observation(next_obs),
                                                    state.scaler.to_unit_action(next_actions))
        residual = balance_residual(losses, q, q_next, continues, config.gamma)
    else:
        residual = losses - dual["lam"]
    weights = worst_case_weights(residual, tau_of(dual["tau_raw"]), get_divergence(config.divergence),
                                 config.max_weight)
    return residual, weights


def current_weights(state: State, batch: dict[str, jnp.ndarray]) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(l, e, w*) of every transition of ``batch`` under ``state`` as it is: what the next policy step
    would weight by (diagnostics and tests)."""
    obs = state.scaler.observation(batch["observations"])
    losses = bc.per_sample_imitation_loss(state.config.policy, state.act_dim, state.policy.params, obs,
                                          state.scaler.to_unit_action(batch["actions"]))
    return (losses, *residual_and_weights(state, state.dual.params, batch, losses))


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array) -> tuple[State, dict]:
    del key
    config = state.config
    divergence = get_divergence(config.divergence)
    critic = Critic(config.q_hidden_dims)
    obs = state.scaler.observation(batch["observations"])
    actions = state.scaler.to_unit_action(batch["actions"])
    if config.initial_states == "all":
        init_obs, init_actions = obs, actions
    else:
        init_obs = state.scaler.observation(batch["initial_observations"])
        init_actions = state.scaler.to_unit_action(batch["initial_actions"])
    losses = jax.lax.stop_gradient(
        bc.per_sample_imitation_loss(config.policy, state.act_dim, state.policy.params, obs, actions))

    def dual_loss_fn(dual):
        residual, weights = residual_and_weights(state, dual, batch, losses)
        tau = tau_of(dual["tau_raw"])
        if config.balance:
            value = dual_objective(critic.apply(dual["q"], init_obs, init_actions), residual, weights, tau,
                                   config.rho, config.gamma, divergence)
        else:
            value = normalised_dual_objective(losses, weights, dual["lam"], tau, config.rho, divergence)
        return value, residual

    dual, (dual_loss, residual), _ = gradient_step(state.dual, dual_loss_fn, has_aux=True)
    _, weights = residual_and_weights(state, dual.params, batch, losses)  # the policy sees the new dual

    def policy_loss_fn(params):
        per_sample = bc.per_sample_imitation_loss(config.policy, state.act_dim, params, obs, actions)
        return weighted_imitation_loss(weights, per_sample)

    policy, policy_loss, _ = gradient_step(state.policy, policy_loss_fn)
    total = jnp.sum(weights)
    metrics = {
        "dual_loss": dual_loss, "policy_loss": policy_loss, "bc_loss": jnp.mean(losses),
        "tau": tau_of(dual.params["tau_raw"]), "lambda": dual.params["lam"],
        "q_initial": jnp.mean(critic.apply(dual.params["q"], init_obs, init_actions)),
        "residual_mean": jnp.mean(residual), "residual_std": jnp.std(residual),
        "weight_mean": jnp.mean(weights), "weight_std": jnp.std(weights), "weight_max": jnp.max(weights),
        "weight_zero_fraction": jnp.mean(weights <= 0.0),
        "effective_sample_fraction": total**2 / jnp.maximum(jnp.sum(weights**2), 1e-12) / weights.shape[0],
        "weight_loss_correlation": _correlation(weights, losses),
    }
    return state.replace(policy=policy, dual=dual, step=state.step + 1), metrics


def _correlation(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    xc, yc = x - jnp.mean(x), y - jnp.mean(y)
    return jnp.sum(xc * yc) / jnp.maximum(jnp.sqrt(jnp.sum(xc**2) * jnp.sum(yc**2)), 1e-12)


act = bc.act
