"""Q-functions: one critic, and an ensemble of independent critics evaluated in one vectorised call."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from drorl.nn.mlp import MLP


class Critic(nn.Module):
    """Q(s, a) = MLP([s, a])."""

    hidden_dims: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
        return MLP(self.hidden_dims, 1, self.activation)(jnp.concatenate([obs, action], axis=-1))[..., 0]


class CriticEnsemble(nn.Module):
    """``num`` critics with separate parameters, evaluated together (``nn.vmap``): returns [num, batch]."""

    hidden_dims: Sequence[int]
    num: int = 2
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
        ensemble = nn.vmap(Critic, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=None, out_axes=0, axis_size=self.num)
        return ensemble(self.hidden_dims, self.activation)(obs, action)
