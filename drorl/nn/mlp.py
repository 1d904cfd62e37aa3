"""Multi-layer perceptrons."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "relu": nn.relu,
    "tanh": nn.tanh,
    "gelu": nn.gelu,
    "elu": nn.elu,
}


class MLP(nn.Module):
    """Dense layers with an activation between them; the last layer is linear."""

    hidden_dims: Sequence[int]
    out_dim: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        act = ACTIVATIONS[self.activation]
        for width in self.hidden_dims:
            x = act(nn.Dense(width)(x))
        return nn.Dense(self.out_dim)(x)
