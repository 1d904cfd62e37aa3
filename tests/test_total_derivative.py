"""drorl.optim.total_derivative: Hessian-vector products, conjugate gradient and the leader's total
derivative, checked against dense matrices (jax.hessian, test only) and finite differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from drorl.errors import DrorlError
from drorl.nn.kernels import bellman_residuals, kernel_bellman_v_statistic, kernel_inputs
from drorl.optim import annealed_beta, conjugate_gradient, hvp, total_derivative


# --- two small games, each with a strongly convex follower (a unique best response w*(theta)) ---

def convex_game():
    """theta (3,), w a pytree of 4 numbers; g strongly convex in w (a positive definite quadratic plus
    log cosh terms), both objectives non-linear in theta so that the mixed term is not constant."""
    rng = np.random.default_rng(0)
    a0 = rng.normal(size=(4, 4))
    a0 = a0 @ a0.T / 4 + 0.5 * np.eye(4)
    c, d, e = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(4, 3))

    def flat(w):
        return jnp.concatenate([w["a"], w["b"]])

    def follower(theta, w):
        v = flat(w)
        a = a0 + jnp.diag(jnp.exp(0.3 * c @ theta))
        return 0.5 * v @ a @ v + jnp.tanh(d @ theta) @ v + 0.2 * jnp.sum(jnp.log(jnp.cosh(v - theta[0])))

    def leader(theta, w):
        v = flat(w)
        return jnp.sum(jnp.sin(theta)) + v @ jnp.tanh(e @ theta) + 0.5 * jnp.sum(v ** 2) * jnp.sum(theta ** 2)

    theta = jnp.array([0.3, -0.5, 0.8])
    w = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    return leader, follower, theta, w


def kernel_game():
    """StackelbergLearner in miniature: a softmax policy over a 3-state, 2-action MDP (theta, 6 logits),
    a linear q on 4 random features (w), leader f = E[q(s0, pi)], follower g = f + lambda L_K with the
    V-statistic kernel loss, whose quadratic form is positive definite in w here (12 transitions,
    features of full rank), so the best response is unique (the U-statistic's need not be)."""
    rng = np.random.default_rng(1)
    n_states, n_actions, n = 3, 2, 12
    features = jnp.asarray(rng.normal(size=(n_states, n_actions, 4)))
    s, a = rng.integers(n_states, size=n), rng.integers(n_actions, size=n)
    s_next, rewards = rng.integers(n_states, size=n), jnp.asarray(rng.normal(size=n))
    terminals = jnp.asarray(rng.random(n) < 0.2)
    s0 = jnp.array([0, 1])
    x = kernel_inputs(jax.nn.one_hot(s, n_states), a, num_actions=n_actions)

    def q_table(w):
        return features @ w["w"]

    def value(theta, w, states):
        pi = jax.nn.softmax(theta["logits"][states], axis=-1)
        return jnp.sum(pi * q_table(w)[states], axis=-1)

    def leader(theta, w):
        return jnp.mean(value(theta, w, s0))

    def follower(theta, w):
        residuals = bellman_residuals(rewards, terminals, value(theta, w, s_next), q_table(w)[s, a], 0.9)
        return leader(theta, w) + 10.0 * kernel_bellman_v_statistic(residuals, x)

    theta = {"logits": jnp.asarray(rng.normal(size=(n_states, n_actions)))}
    return leader, follower, theta, {"w": jnp.zeros(4)}


GAMES = {"convex": convex_game, "kernel-v-statistic": kernel_game}


def best_response_solver(follower):
    """theta, w0 -> w*(theta) by 20 Newton steps on the dense Hessian (the inner solver; test only)."""
    @jax.jit
    def solve(theta, w0):
        flat_w, unravel = ravel_pytree(w0)
        objective = lambda v: follower(theta, unravel(v))  # noqa: E731

        def newton_step(_, v):
            return v - jnp.linalg.solve(jax.hessian(objective)(v), jax.grad(objective)(v))

        return unravel(jax.lax.fori_loop(0, 20, newton_step, flat_w))

    return solve


@jax.jit(static_argnums=(0, 1))
def dense_total_derivative(leader, follower, theta, w, beta):
    """grad_theta f - J^T (H + beta I)^{-1} grad_w f with dense H = d2g/dw2 and J = d(grad_w g)/d theta,
    and grad_theta f alone (the simultaneous gradient)."""
    flat_theta, unravel_theta = ravel_pytree(theta)
    flat_w, unravel_w = ravel_pytree(w)
    f = lambda t, v: leader(unravel_theta(t), unravel_w(v))  # noqa: E731
    g = lambda t, v: follower(unravel_theta(t), unravel_w(v))  # noqa: E731
    hessian = jax.hessian(g, argnums=1)(flat_theta, flat_w)
    mixed = jax.jacobian(jax.grad(g, argnums=1), argnums=0)(flat_theta, flat_w)
    grad_theta, grad_w = jax.grad(f, argnums=(0, 1))(flat_theta, flat_w)
    return grad_theta - mixed.T @ jnp.linalg.solve(hessian + beta * jnp.eye(len(flat_w)), grad_w), grad_theta


@functools.cache
def setup(game):
    """The game, its best response and the jitted CG total derivative, shared by the tests (one compile)."""
    leader, follower, theta, w = GAMES[game]()
    best_response = best_response_solver(follower)
    solve = jax.jit(lambda t, v, beta: total_derivative(leader, follower, t, v, beta=beta, max_iters=20,
                                                        tol=1e-12))
    return leader, follower, theta, best_response(theta, w), best_response, solve


def relative_error(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.parametrize("game", list(GAMES))
def test_total_derivative_matches_exact_and_finite_differences(float64, game):
    """Acceptance check 1, beta = 0: the follower is strongly convex (see each game's docstring), so
    w*(theta) is unique and d f(theta, w*(theta)) / d theta is the exact total derivative."""
    leader, follower, theta, w_star, best_response, solve = setup(game)
    result = solve(theta, w_star, 0.0)
    ours = ravel_pytree(result.grad)[0]
    exact, partial = dense_total_derivative(leader, follower, theta, w_star, 0.0)
    assert not bool(result.cg.negative_curvature) and float(result.cg.residual_norm) < 1e-9
    assert relative_error(exact, partial) > 0.1  # the Stackelberg term matters in this game
    assert relative_error(ours, exact) < 1e-4

    flat_theta, unravel = ravel_pytree(theta)
    leader_jit = jax.jit(leader)
    f_at_best_response = lambda t: leader_jit(unravel(t), best_response(unravel(t), w_star))  # noqa: E731
    eps = 1e-5
    finite_differences = jnp.array([
        (f_at_best_response(flat_theta + eps * unit) - f_at_best_response(flat_theta - eps * unit)) / (2 * eps)
        for unit in jnp.eye(len(flat_theta))])
    assert relative_error(ours, finite_differences) < 1e-4


@pytest.mark.parametrize("game", list(GAMES))
def test_regularised_total_derivative_matches_dense_solve(float64, game):
    leader, follower, theta, w_star, _, solve = setup(game)
    exact, _ = dense_total_derivative(leader, follower, theta, w_star, 0.5)
    assert relative_error(ravel_pytree(solve(theta, w_star, 0.5).grad)[0], exact) < 1e-4


def test_hvp_is_the_dense_hessian_times_the_vector(float64):
    _, follower, theta, w = convex_game()
    w = {"a": jnp.array([0.2, -0.1]), "b": jnp.array([0.4, 0.3])}
    v = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([0.5, 0.7])}
    flat_w, unravel = ravel_pytree(w)
    dense = jax.jit(jax.hessian(lambda u: follower(theta, unravel(u))))(flat_w) @ ravel_pytree(v)[0]
    ours = jax.jit(lambda u, t: hvp(lambda p: follower(theta, p), u, t))(w, v)
    np.testing.assert_allclose(ravel_pytree(ours)[0], dense, rtol=1e-10)


def test_cg_stops_cleanly_on_negative_curvature():
    """Acceptance check 2. Zero curvature along the first direction would make plain CG divide by zero
    (inf, then NaN); an indefinite matrix makes it step to a saddle. Both must stop with a finite last
    good iterate and the flag set, inside jit; with beta above |lambda_min| the same solve succeeds."""
    x, info = conjugate_gradient(lambda v: jnp.array([1.0, -1.0]) * v, jnp.array([1.0, 1.0]), max_iters=10)
    assert bool(info.negative_curvature) and int(info.iterations) == 1
    np.testing.assert_array_equal(x, [0.0, 0.0])  # the last good iterate: the start
    assert np.isfinite(float(info.residual_norm))

    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    matrix = jnp.asarray(basis @ np.diag([3.0, 2.0, 1.5, 1.0, 0.5, -0.8]) @ basis.T, jnp.float32)
    b = {"u": jnp.ones(3), "v": jnp.arange(3.0)}
    flat_b, unravel = ravel_pytree(b)

    @jax.jit
    def solve(beta):
        return conjugate_gradient(lambda t: unravel(matrix @ ravel_pytree(t)[0]), b, max_iters=20, beta=beta,
                                  tol=1e-6)

    x, info = solve(0.0)
    assert bool(info.negative_curvature) and 1 <= int(info.iterations) < 20
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(x)) and np.isfinite(float(info.residual_norm))

    x, info = solve(1.0)
    assert not bool(info.negative_curvature)
    np.testing.assert_allclose(ravel_pytree(x)[0], np.linalg.solve(matrix + np.eye(6), flat_b), rtol=1e-4, atol=1e-5)


def test_cg_solves_positive_definite_systems_and_warm_starts(float64):
    rng = np.random.default_rng(2)
    m = rng.normal(size=(5, 5))
    matrix, b = jnp.asarray(m @ m.T + 0.1 * np.eye(5)), jnp.asarray(rng.normal(size=5))
    x, info = conjugate_gradient(lambda v: matrix @ v, b, max_iters=50, beta=0.3, tol=1e-12)
    expected = np.linalg.solve(matrix + 0.3 * np.eye(5), b)
    np.testing.assert_allclose(x, expected, rtol=1e-8)
    assert not bool(info.negative_curvature) and float(info.residual_norm) <= 1e-12 * np.linalg.norm(b)
    _, warm = conjugate_gradient(lambda v: matrix @ v, b, max_iters=50, beta=0.3, tol=1e-8, x0=jnp.asarray(expected))
    assert int(warm.iterations) == 0
    _, capped = conjugate_gradient(lambda v: matrix @ v, b, max_iters=2, beta=0.3, tol=1e-12)
    assert int(capped.iterations) == 2 and float(capped.residual_norm) > 1e-12


def test_annealed_beta_halves_its_excess_each_half_life_down_to_the_floor():
    schedule = lambda step: float(annealed_beta(step, initial=1.0, floor=0.01, half_life=100))  # noqa: E731
    assert schedule(0) == pytest.approx(1.0)
    assert schedule(100) == pytest.approx(0.01 + 0.99 / 2)
    assert schedule(10_000) == pytest.approx(0.01)
    assert float(jax.jit(lambda s: annealed_beta(s, initial=1.0, floor=0.01, half_life=100))(200)) == \
        pytest.approx(0.01 + 0.99 / 4, rel=1e-6)


def test_bad_input_raises():
    matvec, b = lambda v: v, jnp.ones(3)
    with pytest.raises(DrorlError, match="beta must be >= 0"):
        conjugate_gradient(matvec, b, max_iters=5, beta=-0.1)
    with pytest.raises(DrorlError, match="beta must be a scalar"):
        conjugate_gradient(matvec, b, max_iters=5, beta=jnp.ones(2))
    with pytest.raises(DrorlError, match="max_iters"):
        conjugate_gradient(matvec, b, max_iters=0)
    with pytest.raises(DrorlError, match="leaf shapes differ"):
        conjugate_gradient(matvec, b, max_iters=5, x0=jnp.ones(4))
    with pytest.raises(DrorlError, match="structures differ"):
        hvp(lambda p: jnp.sum(p["a"] ** 2), {"a": jnp.ones(2)}, jnp.ones(2))
    leader, follower, theta, w = convex_game()
    with pytest.raises(DrorlError, match="beta must be >= 0"):
        total_derivative(leader, follower, theta, w, beta=-1.0)
    with pytest.raises(DrorlError, match="floor <= initial"):
        annealed_beta(0, initial=0.1, floor=1.0, half_life=10)
    with pytest.raises(DrorlError, match="half_life"):
        annealed_beta(0, initial=1.0, floor=0.1, half_life=0)
