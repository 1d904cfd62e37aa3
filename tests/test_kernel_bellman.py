"""drorl.nn.kernels: the Gaussian kernel on (state, action) pairs and the kernel Bellman loss, checked
on tabular MDPs whose exact kernel Bellman error and Q-function are computed from the transition
probabilities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drorl.errors import DrorlError
from drorl.nn.kernels import (bellman_residuals, kernel_bellman_u_statistic, kernel_bellman_v_statistic,
                              kernel_inputs, median_bandwidth, rbf_kernel)

N_STATES, N_ACTIONS, GAMMA = 4, 2, 0.9


def tabular_inputs(states, actions):
    """Kernel inputs of a tabular MDP: the state one-hot (already on a common scale) and the action."""
    return kernel_inputs(jax.nn.one_hot(states, N_STATES, dtype=jnp.float64), actions, num_actions=N_ACTIONS)


def test_u_statistic_is_unbiased_and_v_statistic_is_not(float64):
    """Acceptance check 3. Stochastic next states and terminations; a fixed Q and policy. The exact
    kernel Bellman error is sum_{x, x'} mu(x) mu(x') K(x, x') E[R|x] E[R|x'] over the (s, a) sampling
    distribution mu. Over many batches of n = 8 the U-statistic's mean matches it within 4 Monte-Carlo
    standard errors, while the V-statistic's mean sits at L + (E[K(x, x) R^2] - L) / n, many standard
    errors away (and matches that biased value)."""
    rng = np.random.default_rng(0)
    n_pairs = N_STATES * N_ACTIONS
    mu = rng.dirichlet(np.ones(n_pairs))  # over pairs x = s * N_ACTIONS + a
    transitions = rng.dirichlet(np.ones(N_STATES), size=n_pairs)  # P(s' | x)
    p_terminal = rng.uniform(0.0, 0.3, size=n_pairs)
    reward = rng.normal(size=n_pairs)
    q = rng.normal(size=n_pairs)
    policy = rng.dirichlet(np.ones(N_ACTIONS), size=N_STATES)
    v = np.sum(policy * q.reshape(N_STATES, N_ACTIONS), axis=1)

    pair_states, pair_actions = np.divmod(np.arange(n_pairs), N_ACTIONS)
    bandwidth = 1.0
    x_all = tabular_inputs(pair_states, pair_actions)
    gram = np.asarray(rbf_kernel(x_all, x_all, bandwidth))
    # R given x: r + gamma V(s') - q with probability (1 - p_terminal) P(s'|x), r - q if terminal
    continuing = reward[:, None] + GAMMA * v[None, :] - q[:, None]
    mean_r = (1 - p_terminal) * np.sum(transitions * continuing, axis=1) + p_terminal * (reward - q)
    mean_r2 = (1 - p_terminal) * np.sum(transitions * continuing ** 2, axis=1) + p_terminal * (reward - q) ** 2
    exact = (mu * mean_r) @ gram @ (mu * mean_r)

    n, batches = 8, 40_000
    pairs = rng.choice(n_pairs, p=mu, size=(batches, n))
    next_states = (rng.random((batches, n, 1)) > np.cumsum(transitions[pairs], axis=-1)).sum(-1)
    terminals = rng.random((batches, n)) < p_terminal[pairs]
    residuals = bellman_residuals(jnp.asarray(reward[pairs]), jnp.asarray(terminals), jnp.asarray(v[next_states]),
                                  jnp.asarray(q[pairs]), GAMMA)
    inputs = jax.vmap(tabular_inputs)(jnp.asarray(pair_states[pairs]), jnp.asarray(pair_actions[pairs]))
    u = np.asarray(jax.vmap(lambda r, x: kernel_bellman_u_statistic(r, x, bandwidth))(residuals, inputs))
    v_stat = np.asarray(jax.vmap(lambda r, x: kernel_bellman_v_statistic(r, x, bandwidth))(residuals, inputs))

    u_se, v_se = u.std() / np.sqrt(batches), v_stat.std() / np.sqrt(batches)
    assert abs(u.mean() - exact) < 4 * u_se, (u.mean(), exact, u_se)
    assert abs(v_stat.mean() - exact) > 10 * v_se, (v_stat.mean(), exact, v_se)
    v_expected = exact + (mu @ (np.diag(gram) * mean_r2) - exact) / n
    assert abs(v_stat.mean() - v_expected) < 4 * v_se, (v_stat.mean(), v_expected, v_se)


def test_minimising_the_v_statistic_recovers_the_true_q(float64):
    """Acceptance check 4, V-statistic. The data hold every (s, a) four times, with next states and
    terminations in exactly the proportions of a stochastic MDP whose probabilities are multiples of 1/4
    (full coverage, empirical MDP = true MDP). The V-statistic is a positive semi-definite quadratic form
    in the residuals, zero exactly when each pair's residuals sum to zero, i.e. when q solves the Bellman
    equation for pi: its minimiser is Q^pi. The U-statistic is no loss to minimise on a fixed batch: its
    Hessian here is indefinite (it has no minimiser), as the spec's corrections warn."""
    rng = np.random.default_rng(3)
    n_pairs, slots = N_STATES * N_ACTIONS, 4
    pair_states, pair_actions = np.divmod(np.arange(n_pairs), N_ACTIONS)
    next_states = rng.integers(N_STATES, size=(n_pairs, slots))
    terminals = rng.random((n_pairs, slots)) < 0.25
    reward = rng.normal(size=n_pairs)
    policy = rng.dirichlet(np.ones(N_ACTIONS), size=N_STATES)

    # Q^pi = r + gamma P_pi Q^pi with P_pi[x, (s', a')] = mean over slots of (1 - terminal) 1[s'] pi(a'|s')
    continuation = np.zeros((n_pairs, n_pairs))
    for pair in range(n_pairs):
        for slot in range(slots):
            if not terminals[pair, slot]:
                s_next = next_states[pair, slot]
                continuation[pair, s_next * N_ACTIONS:(s_next + 1) * N_ACTIONS] += policy[s_next] / slots
    q_true = np.linalg.solve(np.eye(n_pairs) - GAMMA * continuation, reward)

    pairs = np.repeat(np.arange(n_pairs), slots)
    inputs = tabular_inputs(pair_states[pairs], pair_actions[pairs])
    policy_j = jnp.asarray(policy)

    def residuals(q_flat):
        q_table = q_flat.reshape(N_STATES, N_ACTIONS)
        next_values = jnp.sum(policy_j[next_states.ravel()] * q_table[next_states.ravel()], axis=1)
        return bellman_residuals(jnp.asarray(reward[pairs]), jnp.asarray(terminals.ravel()), next_values,
                                 q_flat[pairs], GAMMA)

    def loss(q_flat):
        return kernel_bellman_v_statistic(residuals(q_flat), inputs)

    # the loss is quadratic in q: one Newton step from anywhere is its exact minimiser
    q0 = jnp.zeros(n_pairs)
    hessian = jax.jit(jax.hessian(loss))(q0)
    q_min = q0 - jnp.linalg.solve(hessian, jax.jit(jax.grad(loss))(q0))
    assert float(loss(q_min)) < 1e-20
    np.testing.assert_allclose(q_min, q_true, atol=1e-8)

    u_hessian = jax.jit(jax.hessian(lambda q: kernel_bellman_u_statistic(residuals(q), inputs)))(q0)
    assert np.linalg.eigvalsh(np.asarray(u_hessian)).min() < 0


def test_kernel_inputs_median_bandwidth_and_gram():
    states = jnp.array([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]])
    discrete = kernel_inputs(states, jnp.array([1, 0, 2]), num_actions=3)
    np.testing.assert_array_equal(discrete[:, 2:], np.eye(3)[[1, 0, 2]])
    continuous = kernel_inputs(states, jnp.array([[0.3], [-0.2], [0.9]]))
    np.testing.assert_allclose(continuous[:, 2], [0.3, -0.2, 0.9])
    np.testing.assert_array_equal(kernel_inputs(states, jnp.array([0.3, -0.2, 0.9])), continuous)

    x = np.asarray(continuous)
    distances = [np.linalg.norm(x[i] - x[j]) for i in range(3) for j in range(i + 1, 3)]
    assert float(median_bandwidth(continuous)) == pytest.approx(np.median(distances), rel=1e-6)
    # repeated rows are left out of the median; all-equal rows fall back to 1
    repeated = jnp.concatenate([continuous, continuous, continuous])
    assert float(median_bandwidth(repeated)) == pytest.approx(np.median(distances), rel=1e-6)
    assert float(median_bandwidth(jnp.ones((4, 2)))) == 1.0

    gram = rbf_kernel(continuous, continuous, 0.7)
    np.testing.assert_allclose(gram, gram.T, rtol=1e-6)
    np.testing.assert_allclose(jnp.diag(gram), 1.0)
    assert float(gram[0, 1]) == pytest.approx(np.exp(-np.sum((x[0] - x[1]) ** 2) / (2 * 0.7 ** 2)), rel=1e-5)


def test_bellman_residuals_bootstrap_only_non_terminal_transitions():
    r = bellman_residuals(jnp.array([1.0, 1.0]), jnp.array([False, True]), jnp.array([2.0, 2.0]),
                          jnp.array([0.5, 0.5]), 0.9)
    np.testing.assert_allclose(r, [1.0 + 0.9 * 2.0 - 0.5, 1.0 - 0.5])


def test_bad_input_raises():
    x = jnp.zeros((3, 2))
    with pytest.raises(DrorlError, match="residuals"):
        kernel_bellman_u_statistic(jnp.zeros(4), x)
    with pytest.raises(DrorlError, match="residuals"):
        kernel_bellman_v_statistic(jnp.zeros((3, 1)), x)
    with pytest.raises(DrorlError, match="at least 2"):
        kernel_bellman_u_statistic(jnp.zeros(1), jnp.zeros((1, 2)))
    with pytest.raises(DrorlError, match="bandwidth must be > 0"):
        kernel_bellman_u_statistic(jnp.zeros(3), x, bandwidth=0.0)
    with pytest.raises(DrorlError, match="share one shape"):
        bellman_residuals(jnp.zeros(3), jnp.zeros(3), jnp.zeros(2), jnp.zeros(3), 0.9)
    with pytest.raises(DrorlError, match="discount"):
        bellman_residuals(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), 1.5)
    with pytest.raises(DrorlError, match="actions"):
        kernel_inputs(x, jnp.zeros(4, jnp.int32), num_actions=2)
    with pytest.raises(DrorlError, match="rbf_kernel"):
        rbf_kernel(x, jnp.zeros((3, 5)), 1.0)
