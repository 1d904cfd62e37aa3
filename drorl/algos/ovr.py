"""OVR: offline variance regularisation (Islam et al.; Algorithm 1, Eq. 5-7), on top of BCQ.

Every update:
1. one DualDICE step estimates w = d^pi / d^D for the current BCQ policy (its actions at s', s0);
2. the variance dual variable in closed form, nu(s, a) = w(s, a) r(s, a);
3. the augmented reward (Eq. 7): r~ = r - lambda nu r - lambda r^2;
4. one BCQ step with r~ in place of r.

Choices (config options, ``Config.ratio``): w is clipped to [0, max_ratio] and, by default,
self-normalised by its batch mean (the spec's choice: a density ratio has E_D[w] = 1, though where episodes
end, as hopper's falls, E_D[w] = 1 - E[g^T] < 1 and the normalised ratio overweights every row); for the
first ``ratio.warmup`` updates the ratio networks train but w is not used (lambda is 0, the I.W. weights
are 1), so the penalty never multiplies a ratio estimate still far from its saddle point;
``importance_weighting=True`` is the paper's "BCQ + I.W." ablation: the critic loss weighted by w, no
variance term.

Convergence diagnostics (logged every update): ``dice/ratio_mean``, the raw (unclipped, unnormalised) mean
of w under the data, which settles once DualDICE has converged, at the mass of the policy's normalised
discounted occupancy, 1 - E[g^T] (1 when episodes only time out; about 0.9 for BCQ's policy on
hopper-medium); ``dice/value_estimate``, DualDICE's E_D[w r] / (1 - g) for the current policy, to compare
with Monte-Carlo rollouts of it; ``value_estimate``, the same from the processed ratios (what the penalty
multiplies), which overstates the value by 1 / E_D[w] where episodes end even when the ratio is exact;
``penalty_weight``, the lambda in force (0 during the warm-up).
"""

from __future__ import annotations

import dataclasses
import flax.struct
import jax
import jax.numpy as jnp

from drorl.algos import bcq, dualdice
from drorl.algos.base import Spec
from drorl.data.sampling import uniform_batch


# metrics the health monitor (drorl.health) watches for drift, and what drifting means
DIAGNOSTICS = {**bcq.DIAGNOSTICS, "dice/ratio_mean": "the raw density ratio's mean under the data drifts: "
               "DualDICE is not converging, so the variance penalty multiplies an unsettled ratio"}


@dataclasses.dataclass(frozen=True)
class RatioConfig:
    """The DualDICE ratio estimator inside OVR (its discount and batch are BCQ's).

    Attributes:
        hidden_dims: widths of nu's and zeta's hidden layers.
        lr: Adam learning rate of both networks.
        p: exponent of DualDICE's f(x) = |x|^p / p.
        positive: DualDICE's zeta squared, so w >= 0 before clipping (``dualdice.Config.positive``).
        max_ratio: w is clipped to [0, max_ratio].
        self_normalise: divide w by its batch mean.
        warmup: updates at the start during which DualDICE trains but its ratios are not used (the
            penalty is off). 0 is the paper's Algorithm 1 and keeps drorl's committed results; how long
            DualDICE takes to settle depends on the data, ``lr`` and ``positive`` (a 1-D task: ~2,000
            updates at 1e-3; hopper-medium: 5,000 at 1e-3 with ``positive``, walker2d-medium: over 10,000;
            unsettled after 10,000 otherwise), so set it from ``dice/value_estimate`` reaching Monte-Carlo rollouts of
            the policy (``python -m tools.ovr_settling``).
    """

    hidden_dims: tuple[int, ...] = (64, 64)
    lr: float = 1e-4
    p: float = 1.5
    positive: bool = False
    max_ratio: float = 10.0
    self_normalise: bool = True
    warmup: int = 0


@dataclasses.dataclass(frozen=True)
class Config:
    """BCQ's config, the ratio estimator's and the regulariser's.

    Attributes:
        base: the base algorithm (BCQ).
        ratio: the DualDICE ratio estimator.
        variance_lambda: lambda >= 0, the weight of the variance penalty (0: plain BCQ).
        reward_scale: the unit of reward the penalty is measured in: the r^2 terms of Eq. 7 are
            computed on r / reward_scale (and scaled back), so one lambda means the same on tasks whose
            rewards differ in size (the benchmark sets it to the dataset's mean |r|; 1: the paper's raw form).
        importance_weighting: the "BCQ + I.W." ablation instead of the variance term.
    """

    base: bcq.Config = bcq.Config()
    ratio: RatioConfig = RatioConfig()
    variance_lambda: float = 0.1
    reward_scale: float = 1.0
    importance_weighting: bool = False


@flax.struct.dataclass
class State:
    base: bcq.State
    dice: dualdice.State
    step: jnp.ndarray
    config: Config = flax.struct.field(pytree_node=False)


def _dice_config(config: Config) -> dualdice.Config:
    return dualdice.Config(hidden_dims=config.ratio.hidden_dims, nu_lr=config.ratio.lr, zeta_lr=config.ratio.lr,
                           gamma=config.base.gamma, p=config.ratio.p, batch_size=config.base.batch_size,
                           positive=config.ratio.positive)


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    k_base, k_dice = jax.random.split(key)
    return State(base=bcq.init(config.base, spec, k_base), dice=dualdice.init(_dice_config(config), spec, k_dice),
                 step=jnp.zeros((), jnp.int32), config=config)


def sample(data: dict[str, jnp.ndarray], state: State, key: jax.Array) -> dict[str, jnp.ndarray]:
    """Uniform rows, BCQ's batch size."""
    return uniform_batch(data, key, state.config.base.batch_size)


def augmented_reward(rewards: jnp.ndarray, ratios: jnp.ndarray, variance_lambda: float,
                     reward_scale: float = 1.0) -> jnp.ndarray:
    """r~ = r - lambda nu r - lambda r^2 with the closed-form dual nu = w r   (Eq. 7),

    the penalty computed on r / reward_scale and multiplied back by reward_scale.
    """
    unit = rewards / reward_scale
    nu = ratios * unit
    return rewards - reward_scale * variance_lambda * (nu * unit + unit**2)


def processed_ratios(raw: jnp.ndarray, max_ratio: float, self_normalise: bool) -> jnp.ndarray:
    """w clipped to [0, max_ratio], then divided by its batch mean when self-normalising."""
    w = jnp.clip(raw, 0.0, max_ratio)
    return w / jnp.maximum(jnp.mean(w), 1e-6) if self_normalise else w


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array) -> tuple[State, dict]:
    config = state.config
    k_dice, k_base = jax.random.split(key)
    dice, dice_metrics = dualdice.update_for_policy(state.dice, batch, k_dice,
                                                    lambda obs, k: bcq.act(state.base, obs, k))
    ratios = jax.lax.stop_gradient(processed_ratios(dualdice.ratio(dice, batch["observations"], batch["actions"]),
                                                    config.ratio.max_ratio, config.ratio.self_normalise))
    ratios_in_use = state.step >= config.ratio.warmup
    penalty_weight = jnp.where(ratios_in_use, config.variance_lambda, 0.0)
    if config.importance_weighting:
        rewards, weights = batch["rewards"], jnp.where(ratios_in_use, ratios, 1.0)
    else:
        # selected, not multiplied by 0, so a warm-up update is exactly BCQ's
        rewards = jnp.where(ratios_in_use, augmented_reward(batch["rewards"], ratios, config.variance_lambda,
                                                            config.reward_scale), batch["rewards"])
        weights = None
    base, base_metrics = bcq.update(state.base, batch, k_base, rewards=rewards, critic_weights=weights)
    metrics = {**base_metrics, **{f"dice/{k}": v for k, v in dice_metrics.items()},
               "ratio_mean": jnp.mean(ratios), "ratio_max": jnp.max(ratios),
               "value_estimate": dualdice.value_estimate(ratios, batch["rewards"], config.base.gamma),
               "augmented_reward_mean": jnp.mean(rewards), "penalty_weight": penalty_weight}
    return state.replace(base=base, dice=dice, step=state.step + 1), metrics


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    return bcq.act(state.base, obs, key, deterministic)


def base_update_key(key: jax.Array) -> jax.Array:
    """The key OVR's update hands to BCQ (for tests comparing the two updates)."""
    return jax.random.split(key)[1]


__all__ = ["Config", "State", "init", "update", "act", "augmented_reward", "processed_ratios"]
