"""DROMO: distributionally robust offline model-based policy optimisation (Liu, Zhong, Chen; Eq. 13, 14,
17 and Algorithm 1 of ../shared/papers/dromo.txt; spec/model-based.md with its corrections).

COMBO (drorl.algos.combo: model rollouts, mixed batches, conservative critic, SAC actor with its
entropy term as Eq. 14's R(pi), target critics with rate tau) whose critic loss adds the variance
penalty of distributionally robust optimisation (Duchi and Namkoong's chi^2-ball bound, Theorem 3.1):

    alpha E_{s ~ d_f}[ sqrt( Var_{a ~ pi_f(.|s)} Q(s, a) / (|D| d^{pi_beta}(s)) + eps ) ]      (Eq. 13)

with pi_f = f pi_beta + (1 - f) pi and f the weight on real data (the model config's real ratio; the
corrections fix the direction Eq. 9 once writes the other way). Choices, each a config field:

- pi_beta: a tanh-Gaussian MLP fitted by maximum likelihood on the batch's real rows, one step per
  update, with the actions pulled inside (-1, 1) by ``BEHAVIOUR_ACTION_MARGIN`` first.
- Var_{pi_f}: from N actions of pi_beta and N of pi at each state, weighted f / N and (1 - f) / N: the
  variance of the mixture, stratified (no Bernoulli draw of the component).
- |D| d^{pi_beta}(s): ``density="uniform"`` takes |D| (d(s) = 1 at every state, the scale of a typical
  dataset state under the KDE below; counting each continuous state once would give 1); ``"kde"`` takes |D|
  times a Gaussian kernel density of the standardised state against a fixed random subset of the
  dataset's standardised states (Scott's bandwidth), relative to the density of a typical dataset
  state (the median leave-one-out density of that subset), in log space with a floor. Relative,
  because a density of continuous states has units: in 11 standardised dimensions an absolute KDE is
  ~e^-20 at the data and would scale the penalty by e^10, a figure of the state space's volume.
- ``variance="strict"`` is Eq. 17: alpha sqrt(Var_{d_f}(Q(s, a)) / n + eps) over the batch's own
  pairs with n the batch size (the sample the variance is estimated from); it also penalises the
  spread of Q across states, not only across actions.

Lemma 4.1's Eq. 15 is the paper's approximation of the minimiser of Eq. 13, not the minimiser: its
proof drops the cross terms of the standard deviation's gradient. With the target held fixed the
exact stationarity condition of one update is
d_f (Q - y) + beta (rho - d) + alpha d_f(s) pi_f(a|s) (Q(s, a) - m_s) / sqrt(Var_s |D| d(s)) = 0,
m_s = E_{pi_f} Q(s, .): the penalty pulls every action toward the pi_f-mean (tests/test_dromo.py
checks it on a tabular MDP, compares Eq. 15 and finds the beta above which Theorem 4.4's gap
expansion holds).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from drorl.algos import bc, combo, model_based, sac
from drorl.algos.base import Spec
from drorl.data.dataset import Dataset
from drorl.nn.policies import tanh_gaussian_sample
from drorl.nn.train_state import TrainState, gradient_step

# pi_beta's maximum likelihood: dataset actions at the box's edge would have unbounded log-likelihood
BEHAVIOUR_ACTION_MARGIN = 1e-3


@dataclasses.dataclass(frozen=True)
class Config:
    """DROMO's hyper-parameters (the paper has no experiments and gives no values). The critic's squared
    error is taken without Eq. 13's 1/2 (COMBO's convention, drorl.algos.combo), so ``alpha`` and
    ``combo.beta`` here are twice Eq. 13's: the default alpha = 1 is Eq. 13's alpha = 1/2.

    Attributes:
        combo: COMBO's critic, actor, rollouts and real ratio f (DROMO's beta is ``combo.beta``).
        behaviour: pi_beta, the tanh-Gaussian fitted by maximum likelihood.
        alpha: weight of the variance penalty.
        variance: "actions" (Eq. 13: over pi_f's actions at each state) or "strict" (Eq. 17: over the
            batch's pairs).
        density: d^{pi_beta}(s) of Eq. 13: "kde" or "uniform".
        density_states: dataset states the KDE is taken against (a fixed random subset).
        min_log_density: floor of the KDE's log density relative to a typical dataset state's: a state
            far from the data counts as e^min_log_density of a state, which caps its penalty's weight.
        num_variance_actions: N, actions of each of pi_beta and pi per state for Var_{pi_f}.
        epsilon: added inside the square root (its gradient at zero variance).
    """

    combo: combo.Config = combo.Config()
    behaviour: bc.PolicyConfig = bc.PolicyConfig(distribution="gaussian", lr=1e-4, lr_decay=1.0)
    alpha: float = 1.0
    variance: Literal["actions", "strict"] = "actions"
    density: Literal["kde", "uniform"] = "kde"
    density_states: int = 2000
    min_log_density: float = -10.0
    num_variance_actions: int = 10
    epsilon: float = 1e-6


@flax.struct.dataclass
class State:
    combo: combo.State
    behaviour: TrainState
    density_states: jnp.ndarray  # [M, obs_dim], standardised
    log_typical_density: jnp.ndarray  # the KDE's log density at a typical dataset state
    log_dataset_size: jnp.ndarray
    config: Config = flax.struct.field(pytree_node=False)


def prepare(config: Config, dataset: Dataset, spec: Spec, directory: Path, progress: bool = True) -> Spec:
    """The dynamics ensemble, |D| and the KDE's reference states (standardised with the spec's statistics)
    with the median of their leave-one-out log densities."""
    rng = np.random.default_rng(config.combo.model.model_seed)
    # exactly density_states rows (drawn with replacement from a smaller dataset): the state's shapes
    # must not depend on the data, since a checkpoint is restored into a state made without it
    rows = rng.choice(len(dataset), size=config.density_states, replace=len(dataset) < config.density_states)
    states = ((dataset.observations[np.sort(rows)] - spec.obs_mean) / spec.obs_std).astype(np.float32)
    typical = float(jnp.median(log_kde(jnp.asarray(states), jnp.asarray(states), leave_one_out=True)))
    return model_based.prepare_dynamics(config.combo.model, dataset, spec, directory, progress,
                                        density_states=states, log_typical_density=typical,
                                        dataset_size=len(dataset))


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    k_combo, k_behaviour = jax.random.split(key)
    prepared = spec.prepared or {"density_states": np.zeros((config.density_states, spec.obs_dim), np.float32),
                                 "log_typical_density": 0.0, "dataset_size": 1}  # for a checkpoint to fill
    return State(combo=combo.init(config.combo, spec, k_combo),
                 behaviour=bc.init_policy(config.behaviour, spec, k_behaviour),
                 density_states=jnp.asarray(prepared["density_states"]),
                 log_typical_density=jnp.asarray(prepared["log_typical_density"], jnp.float32),
                 log_dataset_size=jnp.log(jnp.asarray(prepared["dataset_size"], jnp.float32)), config=config)


def sample(data: dict[str, jax.Array], state: State, key: jax.Array) -> dict:
    return combo.sample(data, state.combo, key)


def action_variance(q: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """Var_{a ~ p} Q(s, a) = sum_k w_k (Q_k - sum_j w_j Q_j)^2 over the last axis, for a discrete p with
    weights w (summing to 1): Eq. 13's Var_{pi_f}, exact on a tabular MDP, stratified from samples."""
    mean = jnp.sum(weights * q, axis=-1, keepdims=True)
    return jnp.sum(weights * (q - mean) ** 2, axis=-1)


def variance_penalty(variance: jnp.ndarray, log_count: jnp.ndarray, state_weights: jnp.ndarray, alpha: float,
                     epsilon: float) -> jnp.ndarray:
    """alpha sum_s w(s) sqrt(Var_s / (|D| d(s)) + eps) (Eq. 13's regulariser; w = d_f(s), or 1 / B over
    a batch), with ``log_count`` = log(|D| d(s)); summed over any leading (critic) axes."""
    return alpha * jnp.sum(state_weights * jnp.sqrt(variance * jnp.exp(-log_count) + epsilon))


def strict_variance_penalty(q: jnp.ndarray, alpha: float, epsilon: float) -> jnp.ndarray:
    """alpha sqrt(Var_{d_f}(Q(s, a)) / n + eps) over the batch's pairs, n = the batch size (Eq. 17), per
    critic [C, B] and summed over the critics."""
    return alpha * jnp.sum(jnp.sqrt(jnp.var(q, axis=-1) / q.shape[-1] + epsilon))


def log_kde(x: jnp.ndarray, centres: jnp.ndarray, leave_one_out: bool = False) -> jnp.ndarray:
    """log of a Gaussian kernel density at x [B, D] over ``centres`` [M, D] with Scott's bandwidth
    h = M^(-1 / (D + 4)) (unit-scale, standardised states); ``leave_one_out`` (x = centres) leaves each
    point's own kernel out."""
    m, dim = centres.shape
    bandwidth = m ** (-1.0 / (dim + 4))
    squared = jnp.sum(x**2, -1)[:, None] - 2.0 * x @ centres.T + jnp.sum(centres**2, -1)[None]  # a matmul
    exponent = -0.5 * jnp.maximum(squared, 0.0) / bandwidth**2
    if leave_one_out:
        exponent = jnp.where(jnp.eye(m, dtype=bool), -jnp.inf, exponent)
    return (jax.scipy.special.logsumexp(exponent, axis=1) - math.log(m - leave_one_out)
            - dim * (math.log(bandwidth) + 0.5 * math.log(2.0 * math.pi)))


def log_state_count(state: State, obs: jnp.ndarray) -> jnp.ndarray:
    """log(|D| d(s)) at standardised states: log |D|, plus for the KDE the log density relative to a
    typical dataset state's, floored at ``min_log_density``."""
    if state.config.density == "uniform":
        return jnp.broadcast_to(state.log_dataset_size, obs.shape[:1])
    relative = log_kde(obs, state.density_states) - state.log_typical_density
    return state.log_dataset_size + jnp.maximum(relative, state.config.min_log_density)


def _mixture_actions(state: State, agent: sac.State, obs: jnp.ndarray, key: jax.Array
                     ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """N actions of pi_beta then N of pi per state [B, 2N, A], and their pi_f weights [2N]."""
    config, f = state.config, state.config.combo.model.real_ratio
    n, batch, act_dim = config.num_variance_actions, obs.shape[0], agent.act_dim
    actor_net, _ = sac.networks(agent.config, act_dim)
    k_behaviour, k_policy = jax.random.split(key)
    tile = lambda x: jnp.broadcast_to(x[:, None], (batch, n, act_dim))  # noqa: E731
    behaviour = tanh_gaussian_sample(*map(tile, bc.policy_network(config.behaviour, act_dim).apply(
        state.behaviour.params, obs)), k_behaviour)
    policy = tanh_gaussian_sample(*map(tile, actor_net.apply(agent.actor.params, obs)), k_policy)
    weights = jnp.concatenate([jnp.full(n, f / n), jnp.full(n, (1.0 - f) / n)])
    return jax.lax.stop_gradient(jnp.concatenate([behaviour, policy], axis=1)), weights


def regulariser(state: State, key: jax.Array):
    """``(params, obs, actions) -> (penalty, metrics)``: the configured variance penalty for COMBO's critic."""
    config, agent = state.config, state.combo.agent
    _, critic_net = sac.networks(agent.config, agent.act_dim)

    def penalty(params: Any, obs: jnp.ndarray, actions: jnp.ndarray) -> tuple[jnp.ndarray, dict]:
        if config.variance == "strict":
            return strict_variance_penalty(critic_net.apply(params, obs, actions), config.alpha, config.epsilon), {}
        candidates, weights = _mixture_actions(state, agent, obs, key)
        k = candidates.shape[1]
        q = critic_net.apply(params, jnp.repeat(obs, k, axis=0), candidates.reshape(-1, agent.act_dim))
        variance = action_variance(q.reshape(q.shape[0], -1, k), weights)
        log_count = log_state_count(state, obs)
        value = variance_penalty(variance, log_count, 1.0 / obs.shape[0], config.alpha, config.epsilon)
        return value, {"variance_penalty": value, "q_action_std": jnp.mean(jnp.sqrt(variance)),
                       "log_state_count": jnp.mean(log_count)}

    return penalty


def behaviour_step(state: State, real: dict[str, jnp.ndarray]) -> tuple[TrainState, jnp.ndarray]:
    """One maximum-likelihood step of pi_beta on the real rows: E_D[-log pi_beta(a|s)]."""
    scaler, config = state.combo.agent.scaler, state.config
    obs = scaler.observation(real["observations"])
    target = jnp.clip(scaler.to_unit_action(real["actions"]), -1.0 + BEHAVIOUR_ACTION_MARGIN,
                      1.0 - BEHAVIOUR_ACTION_MARGIN)
    loss_fn = lambda p: bc.bc_loss(bc.per_sample_imitation_loss(  # noqa: E731
        config.behaviour, state.combo.agent.act_dim, p, obs, target))
    behaviour, loss, _ = gradient_step(state.behaviour, loss_fn)
    return behaviour, loss


def update(state: State, batch: dict, key: jax.Array) -> tuple[State, dict]:
    k_combo, k_variance = jax.random.split(key)
    behaviour, behaviour_loss = behaviour_step(state, batch["real"])
    state = state.replace(behaviour=behaviour)
    combo_state, metrics, _ = combo.update_with(state.combo, batch, k_combo, regulariser(state, k_variance))
    return state.replace(combo=combo_state), {**metrics, "behaviour_nll": behaviour_loss}


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    return combo.act(state.combo, obs, key, deterministic)
