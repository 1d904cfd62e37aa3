"""f-divergence generators for distributionally robust objectives over density ratios w = d / d_D.

For a convex f with f(1) = 0, the worst-case ratio of a DRO inner problem
``max_{w >= 0} w y - f(w)`` is ``w*(y) = max(0, (f')^{-1}(y))`` (first-order condition, clipped at
the constraint w >= 0; f convex makes it the maximiser). BE-DROIL evaluates it at ``y = e / tau``.

| name   | f(x)                 | f'(x)            | (f')^{-1}(y)           |
|--------|----------------------|------------------|------------------------|
| softtv | 1/2 log cosh(x - 1)  | 1/2 tanh(x - 1)  | 1 + artanh(2y), abs(y) < 1/2 |
| kl     | x log x - x + 1      | log x            | exp(y)                 |
| chi2   | (x - 1)^2 / 2        | x - 1            | 1 + y                  |

SoftTV's f' is bounded by 1/2, so its inverse exists only on (-1/2, 1/2): y is clipped to the
values whose inverse is at most ``max_weight`` (default 10), which caps the weights there.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax.numpy as jnp

from drorl.errors import DrorlError

Array = jnp.ndarray


@dataclasses.dataclass(frozen=True)
class Divergence:
    """A generator f with its derivative, the derivative's inverse and the worst-case weight."""

    name: str
    f: Callable[[Array], Array]
    f_prime: Callable[[Array], Array]
    f_prime_inverse: Callable[[Array], Array]
    # the largest y at which (f')^{-1} is defined and at most max_weight (None: unbounded)
    y_max: Callable[[float], float] | None = None
    # below this y the weight is 0 (and (f')^{-1} may be undefined there); None: no such bound
    y_min: float | None = None

    def worst_case_weight(self, y: Array, max_weight: float = 10.0) -> Array:
        """w*(y) = max(0, (f')^{-1}(y)), with y capped where the weight would pass ``max_weight``."""
        if self.y_max is not None:
            y = jnp.minimum(y, self.y_max(max_weight))
        if self.y_min is not None:
            y = jnp.maximum(y, self.y_min)
        return jnp.clip(self.f_prime_inverse(y), 0.0, max_weight)


def _log_cosh(x: Array) -> Array:
    """log cosh x without overflow: |x| + log1p(exp(-2|x|)) - log 2."""
    ax = jnp.abs(x)
    return ax + jnp.log1p(jnp.exp(-2.0 * ax)) - jnp.log(2.0)


def soft_tv_inverse_derivative(y: Array) -> Array:
    """(f')^{-1}(y) = 1 + artanh(2y) for SoftTV; y must lie in (-1/2, 1/2)."""
    return 1.0 + jnp.arctanh(2.0 * y)


SOFT_TV = Divergence(
    name="softtv",
    f=lambda x: 0.5 * _log_cosh(x - 1.0),
    f_prime=lambda x: 0.5 * jnp.tanh(x - 1.0),
    f_prime_inverse=soft_tv_inverse_derivative,
    y_max=lambda max_weight: 0.5 * math.tanh(max_weight - 1.0),
    y_min=-0.5 * math.tanh(1.0),  # (f')^{-1}(y) <= 0 from here down; artanh(2y) is NaN below -1/2
)

KL = Divergence(
    name="kl",
    f=lambda x: jnp.where(x > 0, x * jnp.log(jnp.where(x > 0, x, 1.0)), 0.0) - x + 1.0,
    f_prime=lambda x: jnp.log(x),
    f_prime_inverse=jnp.exp,
    y_max=lambda max_weight: math.log(max_weight),
)

CHI2 = Divergence(
    name="chi2",
    f=lambda x: 0.5 * (x - 1.0) ** 2,
    f_prime=lambda x: x - 1.0,
    f_prime_inverse=lambda y: 1.0 + y,
)

DIVERGENCES = {d.name: d for d in (SOFT_TV, KL, CHI2)}


def get_divergence(name: str) -> Divergence:
    if name not in DIVERGENCES:
        raise DrorlError(f"unknown divergence {name!r}; expected one of {', '.join(DIVERGENCES)}")
    return DIVERGENCES[name]
