"""A conditional VAE of actions given states (BCQ's generative model of the behaviour policy)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from drorl.nn.mlp import MLP


class ConditionalVAE(nn.Module):
    """Encoder E(s, a) -> (mu, log sigma) of z; decoder D(s, z) -> tanh(.) in [-1, 1]^A.

    ``__call__`` encodes, samples z by reparameterisation and decodes (for training);
    ``decode(obs, z=None, key)`` samples z ~ N(0, I) clipped to [-latent_clip, latent_clip] when z is None.
    """

    hidden_dims: Sequence[int]
    act_dim: int
    latent_dim: int
    latent_clip: float = 0.5

    def setup(self):
        self.encoder = MLP(self.hidden_dims, 2 * self.latent_dim)
        self.decoder = MLP(self.hidden_dims, self.act_dim)

    def __call__(self, obs: jnp.ndarray, action: jnp.ndarray, key: jax.Array):
        mean, log_std = jnp.split(self.encoder(jnp.concatenate([obs, action], -1)), 2, axis=-1)
        log_std = jnp.clip(log_std, -4.0, 15.0)
        z = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        return self.decode(obs, z), mean, log_std

    def decode(self, obs: jnp.ndarray, z: jnp.ndarray | None = None, key: jax.Array | None = None) -> jnp.ndarray:
        if z is None:
            z = jnp.clip(jax.random.normal(key, obs.shape[:-1] + (self.latent_dim,)),
                         -self.latent_clip, self.latent_clip)
        return jnp.tanh(self.decoder(jnp.concatenate([obs, z], -1)))


def vae_loss(reconstruction: jnp.ndarray, action: jnp.ndarray, mean: jnp.ndarray, log_std: jnp.ndarray,
             kl_weight: float = 0.5) -> jnp.ndarray:
    """E[||D(s, z) - a||^2] + kl_weight * KL(N(mu, sigma^2) || N(0, I)), both averaged over elements (BCQ)."""
    reconstruction_error = jnp.mean((reconstruction - action) ** 2)
    kl = -0.5 * jnp.mean(1.0 + 2.0 * log_std - mean**2 - jnp.exp(2.0 * log_std))
    return reconstruction_error + kl_weight * kl
