"""Gaussian kernels on (state, action) pairs and the kernel Bellman loss.

The kernel loss of Feng et al. (2019, "A Kernel Loss for Solving the Bellman Equation") is the
squared RKHS norm of the Bellman residual's kernel mean embedding,

    L_K(q) = E[ K(x, x') E[R | x] E[R | x'] ],   x, x' independent draws of (s, a) from the data,

for the residual R = r + gamma (1 - terminal) V(s') - q(s, a). Because x and x' are independent, a
sum over distinct pairs of transitions estimates it without the double-sampling bias of the squared
Bellman error. StackelbergLearner's follower minimises it (with a pessimism term; see
``shared/spec/stackelberg.md``), and ``drorl.optim.total_derivative`` differentiates through it.

- ``kernel_bellman_u_statistic``: 1/(n(n-1)) sum_{i != j} K_ij R_i R_j, unbiased for L_K.
- ``kernel_bellman_v_statistic``: 1/n^2 sum_{i, j} K_ij R_i R_j; its i = j terms add
  (E[K(x, x) R^2] - L_K) / n, which grows with the residual's conditional variance (the
  double-sampling bias), but it is a positive semi-definite quadratic form in R, so its Hessian is
  too; the U-statistic's is indefinite on a fixed batch (the spec's corrections).
- ``u_statistic`` / ``v_statistic``: the same on a given Gram matrix, e.g. ``state_action_gram``'s
  product kernel (Gaussian on states, Kronecker delta on discrete actions).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from drorl.errors import DrorlError


def kernel_inputs(states: jnp.ndarray, actions: jnp.ndarray, num_actions: int | None = None) -> jnp.ndarray:
    """x = (state, action) rows for the kernel: (n, state_dim + action features).

    ``states`` (n, state_dim) should already be normalised (``Scaler.observation``) so that no state
    dimension dominates the distance. Discrete tasks (``num_actions`` given) take integer actions of
    shape (n,) and append them one-hot; continuous tasks append the actions as given, shape (n,) or
    (n, act_dim) (drorl's algorithms pass them scaled to [-1, 1]).
    """
    states = jnp.asarray(states)
    actions = jnp.asarray(actions)
    if states.ndim != 2:
        raise DrorlError(f"kernel_inputs: states must have shape (n, state_dim), got {states.shape}")
    if actions.shape[:1] != states.shape[:1]:
        raise DrorlError(f"kernel_inputs: {states.shape[0]} states but actions have shape {actions.shape}")
    if num_actions is not None:
        if actions.ndim != 1:
            raise DrorlError(f"kernel_inputs: discrete actions must have shape (n,), got {actions.shape}")
        features = jax.nn.one_hot(actions, num_actions, dtype=states.dtype)
    else:
        if actions.ndim > 2:
            raise DrorlError(f"kernel_inputs: continuous actions must be (n,) or (n, act_dim), got {actions.shape}")
        features = actions.reshape(actions.shape[0], -1).astype(states.dtype)
    return jnp.concatenate([states, features], axis=1)


def _squared_distances(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    # differences rather than |x|^2 + |y|^2 - 2 x.y: equal rows give exactly 0 (tabular data repeats
    # rows, and the median heuristic must tell repeats from near neighbours)
    return jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)


def median_bandwidth(x: jnp.ndarray) -> jnp.ndarray:
    """The median heuristic: the median of the distinct rows' pairwise distances ||x_i - x_j||, i < j.

    Pairs of equal rows are left out (with many repeats the median would otherwise be 0); if every row
    is equal the bandwidth is 1. No gradient flows through it (the kernel is a fixed choice per batch).
    """
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[0] < 2:
        raise DrorlError(f"median_bandwidth: need inputs of shape (n >= 2, d), got {x.shape}")
    upper = np.triu_indices(x.shape[0], k=1)
    distances = jnp.sqrt(_squared_distances(x, x)[upper])
    median = jnp.nanmedian(jnp.where(distances > 0, distances, jnp.nan))
    return jax.lax.stop_gradient(jnp.where(jnp.isnan(median), 1.0, median))


def rbf_kernel(x: jnp.ndarray, y: jnp.ndarray, bandwidth: float | jnp.ndarray) -> jnp.ndarray:
    """Gaussian Gram matrix K_ij = exp(-||x_i - y_j||^2 / (2 bandwidth^2)), shape (len(x), len(y))."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise DrorlError(f"rbf_kernel: need inputs (n, d) and (m, d), got {x.shape} and {y.shape}")
    if not isinstance(bandwidth, jax.core.Tracer) and not float(np.asarray(bandwidth)) > 0:
        raise DrorlError(f"rbf_kernel: bandwidth must be > 0, got {float(np.asarray(bandwidth))}")
    return jnp.exp(-_squared_distances(x, y) / (2.0 * bandwidth ** 2))


def state_action_gram(states: jnp.ndarray, actions: jnp.ndarray, num_actions: int | None = None) -> jnp.ndarray:
    """The Gram matrix K(x_i, x_j) of n (state, action) pairs, bandwidths by the median heuristic.

    Discrete actions (``num_actions`` given, integer ``actions`` (n,)): a Gaussian RBF on the states, its
    bandwidth the median distance between the states, times the Kronecker delta of the actions, so that
    residuals of different actions never pool. A Gaussian on (state, one-hot action) with one median
    bandwidth is nearly blind to the actions: on CartPole its value for one state's two actions is 0.88,
    so an error that raises one action's q and lowers the other's (the action gap, which is what a greedy
    policy reads) costs almost nothing. Continuous actions: one Gaussian on ``kernel_inputs(states,
    actions)`` with the median bandwidth of those inputs. Positive semi-definite either way (a product of
    positive semi-definite kernels).
    """
    if num_actions is None:
        x = kernel_inputs(states, actions)
        return rbf_kernel(x, x, median_bandwidth(x))
    states, actions = jnp.asarray(states), jnp.asarray(actions)
    if actions.ndim != 1 or actions.shape[0] != states.shape[0]:
        raise DrorlError(f"state_action_gram: discrete actions must have shape ({states.shape[0]},), "
                         f"got {actions.shape}")
    same_action = (actions[:, None] == actions[None, :]).astype(states.dtype)
    return rbf_kernel(states, states, median_bandwidth(states)) * same_action


def bellman_residuals(rewards: jnp.ndarray, terminals: jnp.ndarray, next_values: jnp.ndarray,
                      q_values: jnp.ndarray, discount: float) -> jnp.ndarray:
    """R_i = r_i + discount (1 - terminal_i) V(s'_i) - q(s_i, a_i), elementwise over one shape, e.g. (n,).

    ``terminals`` marks true terminations only: a time-limit cut still bootstraps (spec corrections).
    """
    shapes = {jnp.shape(a) for a in (rewards, terminals, next_values, q_values)}
    if len(shapes) != 1:
        raise DrorlError(f"bellman_residuals: rewards, terminals, next_values and q_values must share one "
                         f"shape, got {sorted(shapes)}")
    if not 0.0 <= discount <= 1.0:
        raise DrorlError(f"bellman_residuals: discount must lie in [0, 1], got {discount}")
    continues = 1.0 - jnp.asarray(terminals, jnp.asarray(q_values).dtype)
    return rewards + discount * continues * next_values - q_values


def _gram(residuals: jnp.ndarray, inputs: jnp.ndarray, bandwidth: float | jnp.ndarray | None) -> jnp.ndarray:
    residuals, inputs = jnp.asarray(residuals), jnp.asarray(inputs)
    if residuals.ndim != 1 or inputs.ndim != 2 or inputs.shape[0] != residuals.shape[0]:
        raise DrorlError(f"kernel Bellman loss: need residuals (n,) and inputs (n, d), got {residuals.shape} "
                         f"and {inputs.shape}")
    if residuals.shape[0] < 2:
        raise DrorlError(f"kernel Bellman loss: need at least 2 transitions, got {residuals.shape[0]}")
    return rbf_kernel(inputs, inputs, median_bandwidth(inputs) if bandwidth is None else bandwidth)


def _check_gram(residuals: jnp.ndarray, gram: jnp.ndarray) -> None:
    n = jnp.shape(residuals)[0] if jnp.ndim(residuals) == 1 else -1
    if n < 2 or jnp.shape(gram) != (n, n):
        raise DrorlError(f"kernel Bellman loss: need residuals (n >= 2,) and a Gram matrix (n, n), got "
                         f"{jnp.shape(residuals)} and {jnp.shape(gram)}")


def u_statistic(residuals: jnp.ndarray, gram: jnp.ndarray) -> jnp.ndarray:
    """1/(n(n-1)) sum_{i != j} gram_ij R_i R_j for a given Gram matrix (``kernel_bellman_u_statistic``)."""
    _check_gram(residuals, gram)
    n = residuals.shape[0]
    # zero the diagonal rather than subtract sum_i K_ii R_i^2 afterwards: no cancellation in float32
    off_diagonal = gram * (1.0 - jnp.eye(n, dtype=gram.dtype))
    return residuals @ off_diagonal @ residuals / (n * (n - 1))


def v_statistic(residuals: jnp.ndarray, gram: jnp.ndarray) -> jnp.ndarray:
    """1/n^2 sum_{i, j} gram_ij R_i R_j for a given Gram matrix (``kernel_bellman_v_statistic``)."""
    _check_gram(residuals, gram)
    return residuals @ gram @ residuals / residuals.shape[0] ** 2


def kernel_bellman_u_statistic(residuals: jnp.ndarray, inputs: jnp.ndarray,
                               bandwidth: float | jnp.ndarray | None = None) -> jnp.ndarray:
    """1/(n(n-1)) sum_{i != j} K(x_i, x_j) R_i R_j: the unbiased kernel loss (Feng et al. 2019).

    ``residuals`` (n,) from ``bellman_residuals``, ``inputs`` (n, d) from ``kernel_inputs``, Gaussian
    kernel with ``bandwidth`` (None: the median heuristic). Leaving out i = j is what removes the
    double-sampling bias; the price is a Hessian that can be indefinite on a fixed batch.
    """
    return u_statistic(residuals, _gram(residuals, inputs, bandwidth))


def kernel_bellman_v_statistic(residuals: jnp.ndarray, inputs: jnp.ndarray,
                               bandwidth: float | jnp.ndarray | None = None) -> jnp.ndarray:
    """1/n^2 sum_{i, j} K(x_i, x_j) R_i R_j: the kernel loss (Feng et al. 2019) with i = j kept.

    Biased upward by (E[K(x, x) R^2] - L_K) / n, that is by the residual's conditional variance among
    other things, but positive semi-definite in R: StackelbergLearner uses it where a convex follower
    is needed (Hessian-vector products for the total derivative). Arguments as for the U-statistic.
    """
    return v_statistic(residuals, _gram(residuals, inputs, bandwidth))
