"""Policies acting in the normalised action box [-1, 1]^A (algorithms rescale to the task's bounds)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from drorl.nn.mlp import MLP

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
_TANH_EPS = 1e-6


class DeterministicPolicy(nn.Module):
    """a = tanh(MLP(s))."""

    hidden_dims: Sequence[int]
    act_dim: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        return jnp.tanh(MLP(self.hidden_dims, self.act_dim, self.activation)(obs))


class TanhGaussianPolicy(nn.Module):
    """a = tanh(u), u ~ N(mu(s), diag sigma(s)^2); returns (mu, log_sigma) of the pre-tanh Gaussian."""

    hidden_dims: Sequence[int]
    act_dim: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        out = MLP(self.hidden_dims, 2 * self.act_dim, self.activation)(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        # Smooth squashing of log sigma into its range keeps gradients alive at the bounds.
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(log_std) + 1.0)
        return mean, log_std


def tanh_gaussian_log_prob(mean: jnp.ndarray, log_std: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
    """log pi(a|s) of a tanh-squashed diagonal Gaussian at an action a in (-1, 1), summed over dimensions.

    log pi(a) = log N(u; mu, sigma^2) - sum_i log(1 - tanh(u_i)^2),  u = artanh(a).
    Actions on the boundary are pulled inside by 1e-6 so the inverse stays finite.
    """
    a = jnp.clip(action, -1.0 + _TANH_EPS, 1.0 - _TANH_EPS)
    u = jnp.arctanh(a)
    z = (u - mean) / jnp.exp(log_std)
    gaussian = -0.5 * z**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    jacobian = jnp.log1p(-(a**2))
    return jnp.sum(gaussian - jacobian, axis=-1)


def tanh_gaussian_sample(mean: jnp.ndarray, log_std: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    return jnp.tanh(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape))


def tanh_gaussian_sample_and_log_prob(mean: jnp.ndarray, log_std: jnp.ndarray,
                                      key: jax.Array) -> tuple[jnp.ndarray, jnp.ndarray]:
    """A reparameterised sample a = tanh(u) and its log-probability, computed from u (no artanh).

    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) keeps the Jacobian term exact near |a| = 1.
    """
    noise = jax.random.normal(key, mean.shape)
    u = mean + jnp.exp(log_std) * noise
    gaussian = -0.5 * noise**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    log_jacobian = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.tanh(u), jnp.sum(gaussian - log_jacobian, axis=-1)
