"""DROMO's critic update on a small tabular MDP, where every quantity is exact (issue 18, acceptance check 1).

One exact update minimises Eq. 13 over the Q table with the target y = B^pi Q^k held fixed:

    1/2 sum d_f (Q - y)^2 + alpha sum_s d_f(s) sqrt(Var_{pi_f} Q(s, .) / (|D| d(s))) + beta (E_rho Q - E_D Q),

built from the library's own pieces (``dromo.action_variance``, ``dromo.variance_penalty``,
``combo.conservative_gap``) and minimised by Newton's method in float64. The MDP (seed 6 of
``random_mdp``) is one where the variance term alone shrinks the data-minus-rollout gap, and where the
minimiser keeps a positive variance at every state (the penalty is a group norm: with a larger alpha
a state's Q values can collapse onto their mean, where the condition below becomes a subgradient one).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drorl.algos import combo, dromo

S, A, GAMMA, F, ALPHA, DATASET_SIZE = 3, 3, 0.9, 0.5, 0.5, 20


def random_mdp(seed: int) -> dict[str, np.ndarray]:
    """Data d(s, a), rollouts rho(s, a), pi_f = f pi_beta + (1 - f) pi with pi_beta the data's own
    conditional, and y = r + gamma P^pi Q^k for a random MDP and Q^k."""
    rng = np.random.default_rng(seed)
    d = rng.dirichlet(np.ones(S * A)).reshape(S, A)
    rho = rng.dirichlet(np.ones(S * A)).reshape(S, A)
    pi = rng.dirichlet(np.ones(A), size=S)
    rewards, transitions = rng.normal(size=(S, A)), rng.dirichlet(np.ones(S), size=(S, A))
    q_k = 3.0 * rng.normal(size=(S, A))
    return {"d": d, "rho": rho, "d_f": F * d + (1 - F) * rho, "pi_f": F * d / d.sum(1, keepdims=True) + (1 - F) * pi,
            "y": rewards + GAMMA * transitions @ np.sum(pi * q_k, axis=1)}


def objective(q, y, beta, alpha, mdp):
    """Eq. 13 on the table (the squared error with Eq. 13's 1/2)."""
    d_f = mdp["d_f"]
    variance = dromo.action_variance(q, mdp["pi_f"])
    penalty = dromo.variance_penalty(variance, jnp.log(DATASET_SIZE * mdp["d"].sum(1)), d_f.sum(1), alpha, 0.0)
    gap = combo.conservative_gap(q.reshape(1, -1), mdp["rho"].reshape(-1), q.reshape(1, -1), mdp["d"].reshape(-1))
    return 0.5 * jnp.sum(d_f * (q - y) ** 2) + penalty + beta * gap[0]


_COMPILED = {}


def exact_update(mdp, y, beta, alpha=ALPHA) -> np.ndarray:
    """The minimiser, by damped Newton from the unregularised one (the objective is strictly convex)."""
    if id(mdp) not in _COMPILED:
        loss = jax.jit(lambda q, y, beta, alpha: objective(q, y, beta, alpha, mdp))
        _COMPILED[id(mdp)] = loss, jax.jit(jax.grad(loss)), jax.jit(jax.hessian(loss))
    loss, grad, hess = _COMPILED[id(mdp)]
    q = jnp.asarray(y - beta * (mdp["rho"] - mdp["d"]) / mdp["d_f"])
    for _ in range(100):
        g = grad(q, y, beta, alpha)
        if float(jnp.max(jnp.abs(g))) < 1e-14:
            break
        step = jnp.linalg.solve(hess(q, y, beta, alpha).reshape(S * A, S * A), g.reshape(-1)).reshape(S, A)
        t = 1.0
        while not float(loss(q - t * step, y, beta, alpha)) <= float(loss(q, y, beta, alpha)) and t > 1e-12:
            t /= 2
        q = q - t * step
    return np.asarray(q)


def pi_f_moments(q, pi_f):
    mean = np.sum(pi_f * q, axis=1, keepdims=True)
    return mean, np.sum(pi_f * (q - mean) ** 2, axis=1)


def eq15(mdp, y, beta, variance) -> np.ndarray:
    """Lemma 4.1's Eq. 15 with lambda = alpha (1 - pi_f(a|s)), |D(s)| = |D| d(s) and the given Var_s."""
    lam = ALPHA * (1.0 - mdp["pi_f"])
    scale = np.sqrt(variance * DATASET_SIZE * mdp["d"].sum(1))[:, None]
    return (1.0 - lam / (lam + scale)) * (y - beta * (mdp["rho"] - mdp["d"]) / mdp["d_f"])


def gap(mdp, q) -> float:
    """E_d[Q] - E_rho[Q]."""
    return float(np.sum((mdp["d"] - mdp["rho"]) * q))


@pytest.fixture(scope="module")
def mdp():
    jax.config.update("jax_enable_x64", True)
    yield random_mdp(6)
    jax.config.update("jax_enable_x64", False)


def test_one_exact_update_meets_the_stationarity_condition_shifts_with_targets_and_cuts_variance(mdp):
    beta = 0.2
    q = exact_update(mdp, mdp["y"], beta)
    mean, variance = pi_f_moments(q, mdp["pi_f"])
    assert variance.min() > 1e-3
    # d_f (Q - y) + beta (rho - d) + alpha d_f(s) pi_f(a|s) (Q - m_s) / sqrt(Var_s |D| d(s)) = 0 (spec corrections)
    residual = (mdp["d_f"] * (q - mdp["y"]) + beta * (mdp["rho"] - mdp["d"])
                + ALPHA * mdp["d_f"].sum(1, keepdims=True) * mdp["pi_f"] * (q - mean)
                / np.sqrt(variance * DATASET_SIZE * mdp["d"].sum(1))[:, None])
    assert np.abs(residual).max() < 1e-12

    shift = 3.7
    np.testing.assert_allclose(exact_update(mdp, mdp["y"] + shift, beta), q + shift, atol=1e-10)

    unregularised = exact_update(mdp, mdp["y"], beta, alpha=0.0)
    np.testing.assert_allclose(unregularised, mdp["y"] - beta * (mdp["rho"] - mdp["d"]) / mdp["d_f"], atol=1e-12)
    _, unregularised_variance = pi_f_moments(unregularised, mdp["pi_f"])
    assert np.all(variance < unregularised_variance)

    # Eq. 15, the paper's approximation, with the exact minimiser's own variance: a different table, and
    # not shift-equivariant
    approx = eq15(mdp, mdp["y"], beta, variance)
    difference = np.abs(approx - q).max()
    print(f"\nEq. 15 vs the exact update: max |difference| {difference:.4f} (|Q| up to {np.abs(q).max():.2f}); "
          f"shifting y by {shift} moves Eq. 15 by {np.ptp(eq15(mdp, mdp['y'] + shift, beta, variance) - approx):.4f} "
          f"more at some pairs than at others")
    assert difference > 0.05
    assert not np.allclose(eq15(mdp, mdp["y"] + shift, beta, variance) - approx, shift, atol=1e-3)


def test_gap_expansion_holds_only_above_a_beta_threshold(mdp):
    """Theorem 4.4 from a common Q^k: the exact update's E_d Q - E_rho Q exceeds the unregularised
    update's (Q = y) only for beta above a threshold, found here by bisection."""
    baseline = gap(mdp, mdp["y"])
    expansion = lambda beta: gap(mdp, exact_update(mdp, mdp["y"], beta)) - baseline  # noqa: E731
    assert expansion(0.0) < -0.05  # the variance term alone shrinks the gap
    low, high = 0.0, 1.0
    assert expansion(high) > 0
    for _ in range(30):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if expansion(middle) < 0 else (low, middle)
    threshold = high
    print(f"\nTheorem 4.4's gap expansion: beta threshold {threshold:.4f} at alpha {ALPHA}, |D| {DATASET_SIZE}")
    assert 0.01 < threshold < 0.5
    assert all(expansion(b * threshold) < 0 for b in (0.0, 0.25, 0.5, 0.9))
    assert all(expansion(b * threshold) > 0 for b in (1.1, 2.0, 5.0, 20.0))


def test_sampled_pieces_match_their_definitions():
    """Stratified samples of pi_f give the mixture's variance; the KDE is the mean Gaussian kernel."""
    rng = np.random.default_rng(0)
    q_behaviour, q_policy = rng.normal(1.0, 1.0, 4000), rng.normal(3.0, 0.5, 4000)
    weights = np.concatenate([np.full(4000, F / 4000), np.full(4000, (1 - F) / 4000)])
    mixture_variance = F * 1.0 + (1 - F) * 0.25 + F * (1 - F) * (3.0 - 1.0) ** 2
    estimate = float(dromo.action_variance(jnp.asarray(np.concatenate([q_behaviour, q_policy]), jnp.float32),
                                           jnp.asarray(weights, jnp.float32)))
    assert estimate == pytest.approx(mixture_variance, rel=0.03)

    centres, x = rng.normal(size=(50, 2)), rng.normal(size=(7, 2))
    h = 50 ** (-1 / 6)
    kernels = np.exp(-0.5 * np.sum((x[:, None] - centres[None]) ** 2, -1) / h**2) / (2 * np.pi * h**2)
    as32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    np.testing.assert_allclose(np.asarray(dromo.log_kde(as32(x), as32(centres))), np.log(kernels.mean(1)), rtol=1e-4)
    among = np.exp(-0.5 * np.sum((centres[:, None] - centres[None]) ** 2, -1) / h**2) / (2 * np.pi * h**2)
    leave_one_out = (among.sum(1) - np.diag(among)) / 49
    np.testing.assert_allclose(np.asarray(dromo.log_kde(as32(centres), as32(centres), leave_one_out=True)),
                               np.log(leave_one_out), rtol=1e-4)
