"""The differentiable CBF-QP safety layer of DSRL and the CBF constraint rows it takes.

The layer (docs: shared spec ``safe-rl.md``, "Safety layer", and its Corrections; DSRL, Chriat and
Sun, arXiv 2310.02459) returns the safe action

    u* = argmin_{u, eps} ||u - u_RL||^2 + M eps^2   s.t.  A u >= b - eps,  u_min <= u <= u_max

for constraint rows A [m, n], b [m] built by :func:`first_order_cbf_rows` or
:func:`high_order_cbf_rows`, and is differentiable in u_RL, A and b, so gradients reach the state
and the disturbance mean through whoever builds A and b. One shared slack eps >= 0 with weight M
keeps the QP feasible (eps may be left free: it is never negative at the optimum).

Three solvers, picked by :func:`cbf_qp` from the shapes:

* one row, no box: the closed form u* = u_RL + max(0, b - a^T u_RL) a / (||a||^2 + 1/M);
* one row with a box: the exact 1-D dual (:func:`one_constraint_box`). A clip of the unbounded
  point can violate the row, so the multiplier is searched instead;
* anything else: a dense Mehrotra primal-dual interior point (:func:`interior_point`) that only
  identifies the active set; the returned point is the QP with those rows as equalities, solved in
  closed form with ordinary differentiable JAX operations, so its derivative is the exact KKT
  (implicit-function) derivative on that piece, with no smoothing and no custom VJP to maintain.

Why our own interior point and not ``qpax`` (0.1.4; the spec suggests it): measured by hand on this
project's CPU (one core), 1024 random instances with 2 controls and the box [-1, 1]^2, M = 1e4,
jitted batched solve plus gradient w.r.t. (u_RL, A, b), and 20 instances against cvxpy and central
finite differences (relative error of the Jacobians, floored at 1e-2):

| rows | ours, float64                      | ours, float32    | qpax (kappa 1e-6) | qpax Jacobian error |
|------|------------------------------------|------------------|-------------------|---------------------|
| 1    | 12 ms; 1-D dual 0.7, closed 0.1 ms | 6; 0.2, 0.1 ms   | 117 ms            | 94 / 0.35 / 0.35    |
| 3    | 32 ms                              | 27 ms            | 75 ms             | 17 / 2e-2 / 2e-4    |
| 8    | 43 ms                              | 37 ms            | 129 ms            | 130 / 0.13 / 1e-3   |

(qpax's Jacobian error at target_kappa = 1e-3, its default / 1e-6 / 1e-8.) Both solve to 1e-9 of
cvxpy; our Jacobians match finite differences to 2e-8 relative for every solver here, qpax's are
smoothed by target_kappa, and it ran 2-10x slower. Degenerate active sets (duplicated rows, more active
rows than n + 1) give the projection onto the active rows' span; the derivative there is one side's.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from drorl.errors import DrorlError

Array = jnp.ndarray

DEFAULT_SLACK_WEIGHT = 1e4


class CBFRows(NamedTuple):
    """Constraint rows A u >= b - eps of the layer, one per obstacle, and the disturbance coefficient.

    ``disturbance_coeff`` [..., k, d] is c_xi, the coefficient of the disturbance in each row (the
    spec's Corrections): b already contains -c_xi^T xi_bar, and the worst expected margin over the
    W1 ball of radius rho_d is tighter by rho_d ||c_xi|| (:mod:`drorl.robust.wasserstein`).
    """

    A: Array
    b: Array
    disturbance_coeff: Array


def _trailing(name: str, x: Array, shape: tuple[int | None, ...]) -> None:
    """Raise unless ``x``'s trailing dimensions are ``shape`` (None: any size)."""
    tail = x.shape[x.ndim - len(shape):] if x.ndim >= len(shape) else None
    if tail is None or any(want is not None and got != want for got, want in zip(tail, shape)):
        wanted = ", ".join("*" if s is None else str(s) for s in shape)
        raise DrorlError(f"{name} has shape {tuple(x.shape)}; expected trailing dimensions ({wanted})")


def _batch_shape(*parts: tuple[str, Array, int]) -> tuple[int, ...]:
    """The broadcast of the leading (batch) dimensions of each (name, array, trailing rank)."""
    try:
        return jnp.broadcast_shapes(*(x.shape[:x.ndim - rank] for _, x, rank in parts))
    except ValueError:
        shapes = ", ".join(f"{name} {tuple(x.shape)}" for name, x, _ in parts)
        raise DrorlError(f"batch dimensions do not broadcast: {shapes}") from None


# ---------------------------------------------------------------------------------------------
# Constraint rows
# ---------------------------------------------------------------------------------------------


def _obstacle_terms(position: Array, centres: Array, radii: Array) -> tuple[Array, Array]:
    """(p - c_i) [..., k, d] and h_i = ||p - c_i||^2 - r_i^2 [..., k] for circular obstacles."""
    offset = position[..., None, :] - centres
    return offset, jnp.sum(offset**2, axis=-1) - radii**2


def _check_obstacles(position: Array, control_matrix: Array, centres: Array, radii: Array) -> None:
    """Raise unless the trailing dimensions agree: position [d], g [d, n], centres [k, d], radii [k]."""
    d = position.shape[-1] if position.ndim else 0
    _trailing("position", position, (d,))
    _trailing("control_matrix", control_matrix, (d, None))
    _trailing("centres", centres, (None, d))
    _trailing("radii", radii, (centres.shape[-2],))


def first_order_cbf_rows(position: Array, drift: Array, control_matrix: Array, centres: Array,
                         radii: Array, disturbance_mean: Array, alpha: float | Array = 1.0) -> CBFRows:
    """Rows of grad h^T (f + g u + xi_bar) + alpha h >= -eps for h_i = ||p - c_i||^2 - r_i^2.

    For a first-order system whose (look-ahead) position moves as p_dot = f + g u + xi: ``drift`` is
    f [..., d], ``control_matrix`` g [..., d, n], ``disturbance_mean`` xi_bar [..., d], ``centres``
    [..., k, d] and ``radii`` [..., k] (inflate radii by the look-ahead distance on the unicycle, per
    the spec's Corrections). Returns A = g^T grad h, b = -alpha h - grad h^T (f + xi_bar) and c_xi =
    grad h = 2 (p - c).
    """
    _check_obstacles(position, control_matrix, centres, radii)
    _trailing("drift", drift, position.shape[-1:])
    _trailing("disturbance_mean", disturbance_mean, position.shape[-1:])
    _batch_shape(("position", position, 1), ("drift", drift, 1), ("control_matrix", control_matrix, 2),  # raises
                 ("centres", centres, 2), ("radii", radii, 1), ("disturbance_mean", disturbance_mean, 1))
    offset, h = _obstacle_terms(position, centres, radii)
    grad_h = 2.0 * offset
    A = jnp.einsum("...kd,...dn->...kn", grad_h, control_matrix)
    b = -alpha * h - jnp.einsum("...kd,...d->...k", grad_h, drift + disturbance_mean)
    return CBFRows(A, b, grad_h)


def high_order_cbf_rows(position: Array, velocity: Array, control_matrix: Array, centres: Array,
                        radii: Array, disturbance_mean: Array, p1: float | Array = 1.0,
                        p2: float | Array = 1.0, drift: Array | None = None) -> CBFRows:
    """Rows of the high-order CBF L_f^2 h + L_g L_f h u + k1 L_f h + k0 h + c_xi^T xi_bar >= -eps.

    For a second-order system p_ddot = f_a + B u + xi with the disturbance in the acceleration
    channel only (spec, Corrections: first-order rows contain no u there, since grad h^T g = 0), and
    h_i = ||p - c_i||^2 - r_i^2: L_f h = 2 (p - c)^T v, L_f^2 h = 2 ||v||^2 + 2 (p - c)^T f_a,
    L_g L_f h = 2 (p - c)^T B, c_xi = 2 (p - c), k1 = p1 + p2, k0 = p1 p2 (p1, p2 > 0; the
    guarantee needs start states with h_dot + p1 h >= 0). Shapes: ``position``, ``velocity``,
    ``disturbance_mean`` and ``drift`` (f_a, default 0; gravity and drag on the quadcopter)
    [..., d], ``control_matrix`` B [..., d, n], ``centres`` [..., k, d], ``radii`` [..., k].
    """
    _check_obstacles(position, control_matrix, centres, radii)
    _trailing("velocity", velocity, position.shape[-1:])
    _trailing("disturbance_mean", disturbance_mean, position.shape[-1:])
    if drift is None:
        drift = jnp.zeros_like(disturbance_mean)
    _trailing("drift", drift, position.shape[-1:])
    _batch_shape(("position", position, 1), ("velocity", velocity, 1), ("drift", drift, 1),  # raises
                 ("control_matrix", control_matrix, 2), ("centres", centres, 2), ("radii", radii, 1),
                 ("disturbance_mean", disturbance_mean, 1))
    offset, h = _obstacle_terms(position, centres, radii)
    c_xi = 2.0 * offset
    h_dot = jnp.einsum("...kd,...d->...k", c_xi, velocity)
    lf2_h = 2.0 * jnp.sum(velocity**2, axis=-1)[..., None] + jnp.einsum("...kd,...d->...k", c_xi, drift)
    A = jnp.einsum("...kd,...dn->...kn", c_xi, control_matrix)
    k1, k0 = p1 + p2, p1 * p2
    b = -(lf2_h + k1 * h_dot + k0 * h + jnp.einsum("...kd,...d->...k", c_xi, disturbance_mean))
    return CBFRows(A, b, c_xi)


# ---------------------------------------------------------------------------------------------
# Solvers (one instance each; cbf_qp batches them)
# ---------------------------------------------------------------------------------------------


def one_constraint_closed_form(u_rl: Array, a: Array, b: Array,
                               slack_weight: float | Array = DEFAULT_SLACK_WEIGHT) -> Array:
    """u* = u_RL + max(0, b - a^T u_RL) a / (||a||^2 + 1/M): one row a [n], b [], no box.

    Stationarity gives u = u_RL + mu a and eps = mu / M; an active row then fixes mu (spec, "Safety
    layer"). The 1/M term is the slack's share: without it an infeasible-looking row with small
    ||a|| would be met exactly at any cost.
    """
    violation = jnp.maximum(0.0, b - a @ u_rl)
    return u_rl + violation * a / (a @ a + 1.0 / slack_weight)


def one_constraint_box(u_rl: Array, a: Array, b: Array, u_min: Array, u_max: Array,
                       slack_weight: float | Array = DEFAULT_SLACK_WEIGHT, iterations: int = 64) -> Array:
    """The layer for one row a [n], b [] and a box, by its exact 1-D dual.

    With multiplier mu >= 0 on a^T u + eps >= b, the Lagrangian's minimiser over the box and eps is
    u(mu) = clip(u_RL + mu a, u_min, u_max), eps(mu) = mu / M (the objective is isotropic, so the
    box minimisation is a coordinate-wise clip). The dual's derivative is proportional to
    phi(mu) = b - a^T u(mu) - mu / M, strictly decreasing, so mu* = 0 if phi(0) <= 0 and otherwise
    its root, bracketed by [0, M (b - min_box a^T u)]. Bisection locates the root's linear piece
    (which coordinates are clipped, and to which bound), and mu* is then solved exactly on that piece:
    mu* = (b - sum_clipped a_j u_j - sum_free a_j u_RL,j) / (sum_free a_j^2 + 1/M). Written with the
    piece fixed, u* is differentiable in u_RL, a, b and the bounds, and its derivative is the KKT one.
    """
    inv_m = 1.0 / slack_weight

    def phi(mu):
        return b - a @ jnp.clip(u_rl + mu * a, u_min, u_max) - mu * inv_m

    def bisect(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        up = phi(mid) > 0.0
        return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    # the piece is searched without gradients; only the exact solve below is differentiated
    sg = jax.lax.stop_gradient
    lowest = jnp.sum(jnp.minimum(a * u_min, a * u_max))
    hi = sg(jnp.maximum(slack_weight * (b - lowest), 0.0))
    lo, hi = jax.lax.fori_loop(0, iterations, bisect, (jnp.zeros_like(hi), hi))
    violated = sg(phi(0.0) > 0.0)
    mu_piece = jnp.where(violated, 0.5 * (lo + hi), 0.0)
    z = sg(u_rl + mu_piece * a)
    at_min, at_max = z <= u_min, z >= u_max
    free = ~(at_min | at_max)
    clipped_value = jnp.where(at_max, u_max, u_min)
    mu = (b - jnp.sum(jnp.where(free, a * u_rl, a * clipped_value))) / (jnp.sum(jnp.where(free, a * a, 0.0))
                                                                         + inv_m)
    mu = jnp.where(violated, mu, 0.0)
    return jnp.where(free, u_rl + mu * a, clipped_value)


def _inequalities(A: Array, b: Array, u_min: Array | None, u_max: Array | None,
                  slack_weight: float | Array) -> tuple[Array, Array]:
    """G x <= h in the scaled variable x = (u, sqrt(M) eps), so that the objective is ||x - x0||^2.

    Each CBF row is divided by its norm (the solution is unchanged; the interior point is better
    conditioned and its primal and dual values become comparable for the active-set test).
    """
    m, n = A.shape
    rows = jnp.concatenate([A, jnp.full((m, 1), 1.0 / jnp.sqrt(slack_weight), A.dtype)], axis=1)
    scale = jnp.linalg.norm(rows, axis=1)
    G, h = -rows / scale[:, None], -b / scale
    if u_min is not None:
        eye = jnp.eye(n, n + 1, dtype=A.dtype)
        G = jnp.concatenate([G, eye, -eye])
        h = jnp.concatenate([h, u_max, -u_min])
    return G, h


def _cholesky(H: Array) -> list[list[Array]]:
    """Lower Cholesky factor of a small SPD matrix, unrolled into scalar operations.

    The matrices here are (n + 1) x (n + 1) with n the number of controls: unrolled, a batch of them
    vectorises under vmap, where LAPACK calls would run one small matrix at a time.
    """
    k = H.shape[0]
    L = [[None] * k for _ in range(k)]
    for j in range(k):
        L[j][j] = jnp.sqrt(H[j, j] - sum(L[j][p] ** 2 for p in range(j)))
        for i in range(j + 1, k):
            L[i][j] = (H[i, j] - sum(L[i][p] * L[j][p] for p in range(j))) / L[j][j]
    return L


def _cholesky_solve(L: list[list[Array]], r: Array) -> Array:
    """Solve L L^T y = r by forward and back substitution (the factor from :func:`_cholesky`)."""
    k = len(L)
    w = [None] * k
    for i in range(k):
        w[i] = (r[i] - sum(L[i][p] * w[p] for p in range(i))) / L[i][i]
    y = [None] * k
    for i in reversed(range(k)):
        y[i] = (w[i] - sum(L[p][i] * y[p] for p in range(i + 1, k))) / L[i][i]
    return jnp.stack(y)


def _mehrotra(G: Array, h: Array, x0: Array, tol: float, max_iter: int) -> tuple[Array, Array, Array]:
    """Primal-dual interior point (Mehrotra predictor-corrector) for min 1/2 ||x - x0||^2, G x <= h.

    Returns the last iterate x, its slacks s (h - G x at convergence) and multipliers z; the caller
    reads the active set {z > s} and uses x as a reference point. The starting point is CVXOPT's
    (least squares, shifted to s, z > 0); the stopping rules are explained in the loop.
    """
    p, k = G.shape
    eye = jnp.eye(k, dtype=G.dtype)
    x = _cholesky_solve(_cholesky(eye + G.T @ G), x0 + G.T @ h)
    s0 = h - G @ x
    s = jnp.where(jnp.min(s0) > 0, s0, s0 + 1.0 - jnp.min(s0))
    z = jnp.where(jnp.min(-s0) > 0, -s0, -s0 + 1.0 - jnp.min(-s0))

    def step_to_boundary(v, dv):
        ratio = jnp.where(dv < 0, -v / jnp.where(dv < 0, dv, -1.0), jnp.inf)
        return jnp.minimum(1.0, jnp.min(ratio))

    def body(state):
        x, s, z, it, _ = state
        r_dual = x - x0 + G.T @ z
        r_prim = G @ x + s - h
        mu = s @ z / p
        chol = _cholesky(eye + G.T @ ((z / s)[:, None] * G))

        def direction(r_comp):  # Newton step with complementarity residual z ds + s dz = r_comp
            dx = _cholesky_solve(chol, -r_dual - G.T @ ((r_comp + z * r_prim) / s))
            ds = -r_prim - G @ dx
            return dx, ds, (r_comp - z * ds) / s

        _, ds_a, dz_a = direction(-s * z)
        alpha_a = jnp.minimum(step_to_boundary(s, ds_a), step_to_boundary(z, dz_a))
        sigma = ((s + alpha_a * ds_a) @ (z + alpha_a * dz_a) / p / mu) ** 3
        dx, ds, dz = direction(-s * z - ds_a * dz_a + sigma * mu)
        alpha = 0.99 * jnp.minimum(step_to_boundary(s, ds), step_to_boundary(z, dz))
        new = (x + alpha * dx, s + alpha * ds, z + alpha * dz)
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(v)) for v in new]))
        x, s, z = (jnp.where(finite, n_, o_) for n_, o_ in zip(new, (x, s, z)))
        # Only the active set is read, so a small complementarity gap decides; residuals need only
        # be moderate: near the end W = z / s is huge, the Newton system loses accuracy and the dual
        # residual stalls (around 1e-8 in float64 when M is large), then the iterates degrade.
        dual_terms = G.T @ z
        dual_scale = 1.0 + jnp.max(jnp.abs(x0)) + jnp.max(jnp.abs(dual_terms))
        loose = math.sqrt(tol)
        dual_ok = jnp.max(jnp.abs(x - x0 + dual_terms)) <= loose * dual_scale
        primal_ok = jnp.max(jnp.abs(G @ x + s - h)) <= loose * (1.0 + jnp.max(jnp.abs(h)))
        gap = s @ z / p
        # every pair split clearly into active (s << z) or inactive (z << s): the gap alone is
        # dominated by the large multipliers of the slack rows and passes while a box row is unsplit
        split = jnp.all(jnp.minimum(s, z) <= tol * jnp.maximum(s, z))
        # the last clause stops iterates that no longer improve (float32 with a large M)
        done = (~finite | (dual_ok & primal_ok & split & (gap <= tol * dual_scale))
                | (gap <= tol**2 * dual_scale))
        return x, s, z, it + 1, done

    def cond(state):
        return (~state[4]) & (state[3] < max_iter)

    x, s, z, _, _ = jax.lax.while_loop(cond, body, (x, s, z, 0, jnp.array(False)))
    return x, s, z


def _active_set_solution(G: Array, h: Array, x0: Array, active: Array, x_ref: Array) -> Array:
    """argmin 1/2 ||x - x0||^2 s.t. G_S x = h_S for the active rows S, differentiable in G, h, x0.

    The projection of x0 onto that affine set, through an orthonormal basis q_i of the active rows
    (classical Gram-Schmidt, applied twice), written about the interior point's iterate x_ref:
    x = x_ref + P (x0 - x_ref) + sum_i c_i q_i, where P = I - sum_i q_i q_i^T projects onto the
    complement of the active rows and c_i = q_i^T (x - x_ref) follow by forward substitution from
    G_S (x - x_ref) = h_S - G_S x_ref, with g_i = sum_j R_ji q_j. The result does not depend on
    x_ref, which therefore carries no gradient.

    Why this way: with a large M the slack column is small and a vertex with an active slack is
    badly conditioned. The normal equations (G_S G_S^T) lam = G_S x0 - h_S square that condition
    number (float32 lost the solution entirely); here the ill-conditioned substitution only sees the
    small residual h_S - G_S x_ref. x0 - x_ref holds the large scaled slack sqrt(M) eps, so P is
    applied twice, like the Gram-Schmidt step, to keep the rounding of the q_i out of it (1e-3
    errors in float32 otherwise). A row whose residual norm is below sqrt(machine eps) depends on
    the previous ones and is skipped, so degenerate active sets still give the projection.
    """
    threshold = math.sqrt(jnp.finfo(G.dtype).eps)
    shift = h - G @ x_ref

    def add_row(i, carry):  # basis rows and fixed coordinates not yet reached are zero
        basis, fixed = carry
        first = basis @ G[i]
        residual = G[i] - first @ basis
        second = basis @ residual
        residual = residual - second @ basis
        coeffs = first + second
        norm = jnp.linalg.norm(residual)
        keep = active[i] & (norm > threshold)
        safe_norm = jnp.where(keep, norm, 1.0)
        basis = basis.at[i].set(jnp.where(keep, residual / safe_norm, 0.0))
        fixed = fixed.at[i].set(jnp.where(keep, (shift[i] - coeffs @ fixed) / safe_norm, 0.0))
        return basis, fixed

    basis, fixed = jax.lax.fori_loop(0, G.shape[0], add_row, (jnp.zeros_like(G), jnp.zeros_like(h)))
    d = x0 - x_ref
    for _ in range(2):
        d = d - (basis @ d) @ basis
    return x_ref + d + fixed @ basis


def interior_point(u_rl: Array, A: Array, b: Array, u_min: Array | None = None,
                   u_max: Array | None = None, slack_weight: float | Array = DEFAULT_SLACK_WEIGHT,
                   tol: float | None = None, max_iter: int = 40) -> Array:
    """The layer for any number of rows A [m, n], b [m] and an optional box, by interior point.

    The interior point runs without gradients to find the active set (rows with multiplier above
    slack); u* is then the minimiser with those rows as equalities, which is the QP's solution and,
    differentiated by JAX, its KKT derivative. ``tol`` defaults to eps^(2/3) of the dtype (about
    4e-11 in float64, 2e-5 in float32): enough to separate active from inactive rows.
    """
    if (u_min is None) != (u_max is None):
        raise DrorlError("u_min and u_max must both be given or both be None")
    if tol is None:
        tol = float(jnp.finfo(A.dtype).eps) ** (2.0 / 3.0)
    n = A.shape[1]
    G, h = _inequalities(A, b, u_min, u_max, slack_weight)
    x0 = jnp.concatenate([u_rl, jnp.zeros(1, A.dtype)])
    x, s, z = _mehrotra(*jax.lax.stop_gradient((G, h, x0)), tol, max_iter)
    return _active_set_solution(G, h, x0, z > s, x)[:n]


# ---------------------------------------------------------------------------------------------
# The batched layer
# ---------------------------------------------------------------------------------------------


def cbf_qp(u_rl: Array, A: Array, b: Array, u_min: Array | None = None, u_max: Array | None = None,
           slack_weight: float = DEFAULT_SLACK_WEIGHT) -> Array:
    """The safety layer u* for a batch: u_rl [..., n], A [..., m, n], b [..., m], bounds [..., n].

    Leading dimensions broadcast (one call for a whole batch of states); ``u_min`` and ``u_max``
    are both given or both None (no box). One row without box: the closed form; one row with a box:
    the exact 1-D dual; otherwise the interior point with active-set differentiation.
    """
    dtype = jnp.promote_types(jnp.result_type(u_rl, A, b), jnp.float32)
    u_rl, A, b = (jnp.asarray(x, dtype) for x in (u_rl, A, b))
    _trailing("A", A, (None, None))
    m, n = A.shape[-2:]
    _trailing("u_rl", u_rl, (n,))
    _trailing("b", b, (m,))
    if (u_min is None) != (u_max is None):
        raise DrorlError("u_min and u_max must both be given or both be None")
    parts = [("u_rl", u_rl, 1), ("A", A, 2), ("b", b, 1)]
    if u_min is not None:
        for name, bound in (("u_min", u_min), ("u_max", u_max)):
            bound = jnp.asarray(bound, A.dtype)
            bound = bound if bound.ndim else jnp.full((n,), bound)
            _trailing(name, bound, (n,))
            parts.append((name, bound, 1))
    batch = _batch_shape(*parts)
    flat = [jnp.broadcast_to(x, batch + x.shape[x.ndim - rank:]).reshape((-1,) + x.shape[x.ndim - rank:])
            for _, x, rank in parts]

    def solve(u, A_, b_, *box):
        if m > 1:
            return interior_point(u, A_, b_, *box, slack_weight=slack_weight)
        if box:
            return one_constraint_box(u, A_[0], b_[0], *box, slack_weight)
        return one_constraint_closed_form(u, A_[0], b_[0], slack_weight)

    return jax.vmap(solve)(*flat).reshape(batch + (n,))
