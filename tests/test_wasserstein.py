"""The W1 ball of DSRL (issue 19, acceptance check 3): the projection is exact, the identity inside
the ball, and projected ascent reaches the closed-form worst-case margin."""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drorl.errors import DrorlError
from drorl.robust.cbf_qp import high_order_cbf_rows
from drorl.robust.wasserstein import ascent_step, project_w1_ball, worst_case_margin


def reference_projection(delta, radius):
    """argmin ||x - delta||_F^2 s.t. mean_i ||x_i|| <= radius, by cvxpy."""
    x = cp.Variable(delta.shape)
    cp.Problem(cp.Minimize(cp.sum_squares(x - delta)),
               [cp.sum(cp.norm(x, 2, axis=1)) <= delta.shape[0] * radius]).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return x.value


def test_projection_is_exact_against_cvxpy(float64):
    rng = np.random.default_rng(0)
    project = jax.jit(project_w1_ball)
    for trial in range(8):
        n, d = rng.integers(2, 30), rng.integers(1, 4)
        delta = rng.normal(size=(n, d)) * rng.exponential(size=(n, 1))  # norms of varied sizes
        delta[rng.random(n) < 0.2] = 0.0  # and some samples not moved at all
        mean_norm = np.mean(np.linalg.norm(delta, axis=1))
        radius = mean_norm * [0.0, 0.01, 0.3, 0.9][trial % 4]
        projected = np.asarray(project(jnp.asarray(delta), radius))
        np.testing.assert_allclose(projected, reference_projection(delta, radius), atol=1e-6)
        assert np.mean(np.linalg.norm(projected, axis=1)) <= radius + 1e-9


def test_projection_is_the_identity_inside_the_ball(float64):
    """Projecting onto the simplex of norms (instead of the l1 ball) would inflate these."""
    rng = np.random.default_rng(1)
    delta = rng.normal(size=(40, 3))
    mean_norm = float(np.mean(np.linalg.norm(delta, axis=1)))
    for radius in (1.0001 * mean_norm, 1.5 * mean_norm, 100.0):
        np.testing.assert_array_equal(project_w1_ball(jnp.asarray(delta), radius), delta)
    np.testing.assert_array_equal(project_w1_ball(jnp.zeros((5, 2)), 0.3), np.zeros((5, 2)))


def test_ascent_reaches_the_closed_form_worst_case_margin(float64):
    """The adversary lowering E[c^T xi] over transported samples reaches c^T mean(xi0) - rho ||c||,
    and never passes it, from zero and from a random start inside the ball."""
    rng = np.random.default_rng(2)
    xi0 = jnp.asarray(rng.normal(size=(64, 3)))
    c = jnp.asarray([1.5, -0.5, 2.0])
    radius = 0.25

    def margin(delta):
        return jnp.mean((xi0 + delta) @ c)

    step = jax.jit(lambda delta: ascent_step(delta, -jax.grad(margin)(delta), 5.0, radius))
    target = float(worst_case_margin(c, xi0, radius))
    starts = [jnp.zeros_like(xi0), project_w1_ball(jnp.asarray(rng.normal(size=xi0.shape)), radius)]
    for delta in starts:
        for _ in range(100):
            delta = step(delta)
            assert float(margin(delta)) >= target - 1e-9
        assert float(margin(delta)) == pytest.approx(target, abs=1e-8)
        assert float(jnp.mean(jnp.linalg.norm(delta, axis=1))) <= radius + 1e-9


def test_ascent_through_high_order_cbf_rows_reaches_the_tightened_margin(float64):
    """The margin a^T u - b of a double-integrator row, with b built from the transported samples'
    mean, is lowered by exactly rho ||c_xi|| (spec, Corrections: c_xi = 2 (p - c))."""
    rng = np.random.default_rng(3)
    xi0 = jnp.asarray(0.1 * rng.normal(size=(32, 2)))
    p, v, u = jnp.asarray([1.5, 0.4]), jnp.asarray([-1.0, 0.2]), jnp.asarray([0.3, -0.1])
    centres, radii = jnp.asarray([[0.0, 0.0], [3.0, 1.0]]), jnp.asarray([1.0, 0.5])
    radius = 0.2

    def margins(delta):
        rows = high_order_cbf_rows(p, v, jnp.eye(2), centres, radii, jnp.mean(xi0 + delta, axis=0))
        return rows.A @ u - rows.b

    nominal = high_order_cbf_rows(p, v, jnp.eye(2), centres, radii, jnp.mean(xi0, axis=0))
    closed_form = (nominal.A @ u - nominal.b - nominal.disturbance_coeff @ jnp.mean(xi0, axis=0)
                   + worst_case_margin(nominal.disturbance_coeff, xi0, radius))
    for i in range(2):
        lower_margin = jax.grad(lambda d, i=i: -margins(d)[i])
        step = jax.jit(lambda delta, g=lower_margin: ascent_step(delta, g(delta), 1.0, radius))
        delta = jnp.zeros_like(xi0)
        for _ in range(50):
            delta = step(delta)
        assert float(margins(delta)[i]) == pytest.approx(float(closed_form[i]), abs=1e-8)


def test_bad_shapes_raise_one_line_errors():
    bad_calls = [
        lambda: project_w1_ball(jnp.zeros(3), 0.1),
        lambda: ascent_step(jnp.zeros((4, 2)), jnp.zeros((4, 3)), 0.1, 0.1),
        lambda: worst_case_margin(jnp.zeros(3), jnp.zeros((5, 2)), 0.1),
        lambda: worst_case_margin(jnp.zeros(2), jnp.zeros(5), 0.1),
    ]
    for call in bad_calls:
        with pytest.raises(DrorlError) as info:
            call()
        assert "\n" not in str(info.value)
