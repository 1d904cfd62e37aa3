"""The CBF-QP safety layer (issue 19, acceptance checks 1 and 2): solutions against cvxpy,
derivatives against central finite differences, and the high-order CBF on a double integrator."""

import functools

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drorl.errors import DrorlError
from drorl.robust.cbf_qp import (cbf_qp, first_order_cbf_rows, high_order_cbf_rows, interior_point,
                                 one_constraint_box, one_constraint_closed_form)

M = 1e4
N_CONTROLS = 2
BOX = 1.0


def reference(u_rl, A, b, box=True):
    """The QP solved by cvxpy (Clarabel, tight tolerances): (u*, eps*)."""
    u, eps = cp.Variable(len(u_rl)), cp.Variable()
    constraints = [A @ u + eps >= b]
    if box:
        constraints += [u >= -BOX, u <= BOX]
    cp.Problem(cp.Minimize(cp.sum_squares(u - u_rl) + M * cp.square(eps)), constraints).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return u.value, float(eps.value)


def _premise(kind, u_rl, A, b):
    """Whether a random instance is of the requested kind."""
    u_star, eps_star = reference(u_rl, A, b)
    if kind == "random":
        return True
    if kind == "slack":  # the rows cannot all hold in the box: the slack pays for it (and u* is not
        return eps_star > 1e-2 and np.min(np.abs(u_star)) < BOX - 1e-2  # a corner, with no derivative)
    # kind == "box": a bound is active, and clipping the solution without the box violates a row
    # that the layer meets (up to its small slack)
    unboxed, _ = reference(u_rl, A, b, box=False)
    clipped_violation = np.max(b - A @ np.clip(unboxed, -BOX, BOX))
    return eps_star < 1e-3 and np.max(np.abs(u_star)) > BOX - 1e-9 and clipped_violation > 1e-2


@functools.lru_cache(maxsize=None)
def instance(m, kind, seed=0):
    """The first random instance of the kind (u_rl, A, b) from a fixed seed."""
    if (m, kind) == (1, "slack"):
        # one row with a slack and a box puts u* in a corner unless the row leaves a control free
        return np.array([0.3, 0.5]), np.array([[1.3, 0.0]]), np.array([1.8])
    rng = np.random.default_rng([m, ["random", "slack", "box"].index(kind), seed])
    while True:
        u_rl = 2.0 * rng.normal(size=N_CONTROLS)
        A = rng.normal(size=(m, N_CONTROLS))
        b = (0.5 if kind == "box" else 2.0) * rng.normal(size=m)  # many rows rarely fit the box
        if _premise(kind, u_rl, A, b):
            return u_rl, A, b


def dual_bisection(u_rl, A, b):
    return one_constraint_box(u_rl, A[0], b[0], -BOX * jnp.ones(N_CONTROLS), BOX * jnp.ones(N_CONTROLS), M)


def general(u_rl, A, b):
    return interior_point(u_rl, A, b, -BOX * jnp.ones(N_CONTROLS), BOX * jnp.ones(N_CONTROLS), M)


def with_jacobian(solve):
    """One compiled function returning (jacobians w.r.t. u_rl, A, b; u*), shared by the tests."""
    return jax.jit(jax.jacobian(lambda *args: (solve(*args),) * 2, argnums=(0, 1, 2), has_aux=True))


SOLVERS = {"interior point": with_jacobian(general), "1-D dual": with_jacobian(dual_bisection),
           "closed form": with_jacobian(functools.partial(one_constraint_closed_form, slack_weight=M))}
layer = jax.jit(functools.partial(cbf_qp, slack_weight=M))


def central_differences(f, args, which, step=1e-6):
    """d f / d args[which] by central differences, shaped like jax.jacobian's result."""
    x = np.asarray(args[which], dtype=float)
    columns = []
    for j in range(x.size):
        e = np.zeros(x.size)
        e[j] = step
        e = e.reshape(x.shape)
        up = list(args)
        down = list(args)
        up[which], down[which] = x + e, x - e
        columns.append((np.asarray(f(*up)) - np.asarray(f(*down))) / (2 * step))
    return np.stack(columns, axis=-1).reshape(np.shape(f(*args)) + x.shape)


def assert_relative(J, J_fd, rtol=1e-3):
    """||J - J_fd|| <= rtol ||J_fd||; the floor of 1e-2 keeps zero Jacobians from judging noise."""
    err = np.linalg.norm(np.asarray(J) - J_fd)
    assert err <= rtol * max(np.linalg.norm(J_fd), 1e-2), (err, np.asarray(J), J_fd)


CASES = [(1, "random"), (1, "slack"), (1, "box"), (3, "random"), (3, "slack"), (3, "box"),
         (8, "random"), (8, "slack"), (8, "box")]


@pytest.mark.parametrize("m,kind", CASES)
def test_layer_matches_cvxpy_and_finite_differences(float64, m, kind):
    u_rl, A, b = instance(m, kind)
    expected, eps_star = reference(u_rl, A, b)
    args = (jnp.asarray(u_rl), jnp.asarray(A), jnp.asarray(b))
    for name in ["interior point", "1-D dual"] if m == 1 else ["interior point"]:
        jac, solution = SOLVERS[name](*args)
        np.testing.assert_allclose(solution, expected, atol=1e-5, err_msg=name)

        def f(*a, name=name):
            return SOLVERS[name](*a)[1]

        for which, J in enumerate(jac):
            J_fd = central_differences(f, args, which)
            if kind != "random" and which == 1:
                assert np.abs(J_fd).max() > 1e-2  # a row is active: the check is not 0 = 0
            assert_relative(J, J_fd)
    if kind == "box":  # the premise: a clip of the box-free solution breaks a row the layer meets
        unboxed, _ = reference(u_rl, A, b, box=False)
        assert np.max(b - A @ np.clip(unboxed, -BOX, BOX)) > 1e-2
        assert np.min(A @ expected - b) >= -eps_star - 1e-8


@pytest.mark.parametrize("kind", ["random", "slack"])
def test_closed_form_without_box_matches_cvxpy_and_finite_differences(float64, kind):
    rng = np.random.default_rng(7)
    for _ in range(5):
        u_rl, a = rng.normal(size=3), rng.normal(size=3)
        # "slack": a short row asked for a large margin, so the slack takes a visible share
        a, b = (1e-2 * a, 2.0) if kind == "slack" else (a, rng.normal())
        expected, eps_star = reference(u_rl, a[None], np.array([b]), box=False)
        if kind == "slack":
            assert eps_star > 0.1
        args = (jnp.asarray(u_rl), jnp.asarray(a), jnp.asarray(b))
        jac, solution = SOLVERS["closed form"](*args)
        np.testing.assert_allclose(solution, expected, atol=1e-5)
        for which, J in enumerate(jac):
            assert_relative(J, central_differences(lambda *x: SOLVERS["closed form"](*x)[1], args, which))


def test_duplicated_active_row_still_solves(float64):
    """Two obstacles giving the same row make the active set rank-deficient (no LICQ): the layer
    still returns the solution, with finite derivatives (which are one-sided there)."""
    u_rl, A, b = instance(3, "box")
    margins = A @ reference(u_rl, A, b)[0] - b
    A, b = A.copy(), b.copy()
    A[np.argmax(margins)], b[np.argmax(margins)] = A[np.argmin(margins)], b[np.argmin(margins)]
    jac, solution = SOLVERS["interior point"](jnp.asarray(u_rl), jnp.asarray(A), jnp.asarray(b))
    np.testing.assert_allclose(solution, reference(u_rl, A, b)[0], atol=1e-5)
    assert all(np.all(np.isfinite(J)) for J in jac)


def test_batched_layer_dispatches_and_broadcasts(float64):
    """cbf_qp over a [2, 3] batch with shared bounds equals the instances solved one at a time."""
    for m in (1, 3):
        cases = [instance(m, kind) for kind in ("random", "slack", "box")]
        u_rl = jnp.asarray(np.stack([np.stack([c[0] for c in cases])] * 2))
        A = jnp.asarray(np.stack([c[1] for c in cases]))  # [3, m, n], broadcast over the first axis
        b = jnp.asarray(np.stack([c[2] for c in cases]))
        out = layer(u_rl, A, b, -BOX, BOX)
        assert out.shape == (2, 3, N_CONTROLS)
        for i, (u, a, bb) in enumerate(cases):
            np.testing.assert_allclose(out[1, i], reference(u, a, bb)[0], atol=1e-5)
    u_rl, A, b = instance(1, "random")
    unboxed = layer(jnp.asarray(u_rl)[None], jnp.asarray(A)[None], jnp.asarray(b)[None])
    np.testing.assert_allclose(unboxed[0], reference(u_rl, A, b, box=False)[0], atol=1e-5)


def test_float32_stays_accurate_at_slack_vertices(float64):
    """In float32 the large M makes vertices with an active slack ill-conditioned; the layer must
    still agree with float64 (solving them through the normal equations lost them entirely)."""
    rng = np.random.default_rng(3)
    u_rl = 2.0 * rng.normal(size=(1024, N_CONTROLS))
    A = rng.normal(size=(1024, 3, N_CONTROLS))
    b = 2.0 * rng.normal(size=(1024, 3))
    single = layer(*(jnp.asarray(x, jnp.float32) for x in (u_rl, A, b)), -BOX, BOX)
    double = layer(*(jnp.asarray(x) for x in (u_rl, A, b)), -BOX, BOX)
    assert single.dtype == jnp.float32
    np.testing.assert_allclose(single, double, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# constraint rows
# ---------------------------------------------------------------------------------------------


def test_rows_equal_the_cbf_conditions_along_the_dynamics(float64):
    """A u - b is the CBF condition evaluated by differentiating h along the motion, for any u."""
    rng = np.random.default_rng(11)
    p, v, xi_bar, drift, u = (jnp.asarray(rng.normal(size=2)) for _ in range(5))
    B = jnp.asarray(rng.normal(size=(2, 2)))
    centres, radii = jnp.asarray(rng.normal(size=(3, 2))), jnp.asarray([0.3, 0.5, 0.2])

    def h(q):
        return jnp.sum((q - centres) ** 2, axis=-1) - radii**2

    acc = drift + B @ u + xi_bar
    h_dot = jax.jvp(h, (p,), (v,))[1]
    h_ddot = jax.jvp(lambda t: jax.jvp(lambda s: h(p + s * v + 0.5 * s**2 * acc), (t,), (1.0,))[1],
                     (0.0,), (1.0,))[1]
    p1, p2 = 0.7, 1.3
    rows = high_order_cbf_rows(p, v, B, centres, radii, xi_bar, p1=p1, p2=p2, drift=drift)
    np.testing.assert_allclose(rows.A @ u - rows.b, h_ddot + (p1 + p2) * h_dot + p1 * p2 * h(p), rtol=1e-10)
    np.testing.assert_allclose(rows.disturbance_coeff, jax.jacobian(h)(p))

    alpha = 0.4
    first = first_order_cbf_rows(p, drift, B, centres, radii, xi_bar, alpha=alpha)
    np.testing.assert_allclose(first.A @ u - first.b, jax.jvp(h, (p,), (acc,))[1] + alpha * h(p), rtol=1e-10)


def test_high_order_cbf_on_a_double_integrator(float64):
    """Near an obstacle and moving toward it the layer changes the action; far away it does not.
    (First-order rows would have no control in them here: grad h^T g = 0 for p_dot = v.)"""
    centres, radii = jnp.asarray([[0.0, 0.0], [5.0, 5.0], [-5.0, 4.0]]), jnp.asarray([1.0, 0.5, 0.5])
    B, xi_bar, u_rl = jnp.eye(2), jnp.zeros(2), jnp.zeros(2)
    towards = jnp.asarray([-1.0, 0.0])
    near = high_order_cbf_rows(jnp.asarray([1.5, 0.0]), towards, B, centres, radii, xi_bar)
    far = high_order_cbf_rows(jnp.asarray([10.0, -3.0]), towards, B, centres, radii, xi_bar)
    assert np.all(np.asarray(first_order_cbf_rows(jnp.asarray([1.5, 0.0]), towards, jnp.zeros((2, 2)),
                                                  centres, radii, xi_bar).A) == 0.0)
    for lo, hi in ((None, None), (-2.0, 2.0)):
        u_near = layer(u_rl, near.A, near.b, lo, hi)
        u_far = layer(u_rl, far.A, far.b, lo, hi)
        assert float(u_near[0]) > 0.5  # brakes: accelerates away from the obstacle
        assert np.min(near.A @ u_near - near.b) > -1e-3  # and meets the barrier condition
        np.testing.assert_allclose(u_far, u_rl, atol=1e-12)


def test_filtered_rollout_stays_outside_the_obstacle():
    """A policy driving straight through an obstacle, filtered by the layer, keeps h >= 0 (float32)."""
    centre, radius, goal = jnp.asarray([[0.0, 0.0]]), jnp.asarray([1.0]), jnp.asarray([4.0, 0.05])
    dt = 0.01

    def step(state, _, filtered):
        p, v = state
        u = jnp.clip(2.0 * (goal - p) - 2.0 * v, -3.0, 3.0)
        if filtered:
            rows = high_order_cbf_rows(p, v, jnp.eye(2), centre, radius, jnp.zeros(2), p1=2.0, p2=2.0)
            u = cbf_qp(u, rows.A, rows.b, -3.0, 3.0, slack_weight=M)
        v = v + dt * u
        p = p + dt * v
        return (p, v), jnp.sum((p - centre[0]) ** 2) - radius[0] ** 2

    start = (jnp.asarray([-3.0, 0.0]), jnp.zeros(2))
    for filtered in (False, True):
        rollout = jax.jit(lambda s, f=filtered: jax.lax.scan(functools.partial(step, filtered=f), s, None, 600))
        _, h = rollout(start)
        assert (float(jnp.min(h)) >= -1e-3) == filtered  # unfiltered, the policy hits the obstacle


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def test_mismatched_shapes_raise_one_line_errors():
    u, A, b = jnp.zeros(2), jnp.zeros((3, 2)), jnp.zeros(3)
    bad_calls = [
        lambda: cbf_qp(jnp.zeros(3), A, b),
        lambda: cbf_qp(u, A, jnp.zeros(2)),
        lambda: cbf_qp(u, jnp.zeros(2), b),
        lambda: cbf_qp(u, A, b, -1.0, None),
        lambda: cbf_qp(u, A, b, jnp.zeros(3), jnp.ones(3)),
        lambda: cbf_qp(jnp.zeros((4, 2)), jnp.zeros((5, 3, 2)), b),
        lambda: high_order_cbf_rows(u, u, jnp.eye(2), jnp.zeros((2, 3)), jnp.ones(2), u),
        lambda: high_order_cbf_rows(u, jnp.zeros(3), jnp.eye(2), jnp.zeros((2, 2)), jnp.ones(2), u),
        lambda: first_order_cbf_rows(u, u, jnp.eye(3), jnp.zeros((2, 2)), jnp.ones(3), u),
    ]
    for call in bad_calls:
        with pytest.raises(DrorlError) as info:
            call()
        assert "\n" not in str(info.value)
