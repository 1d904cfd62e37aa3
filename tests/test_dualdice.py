"""DualDICE on a small tabular MDP where d^pi and d^D are computed exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from drorl.algos import dualdice
from drorl.ope import estimate_policy_value
from drorl.algos.base import Spec


def tabular(seed=0, states=4, actions=2, gamma=0.9):
    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.ones(states), size=(states, actions))
    behaviour = rng.dirichlet(np.ones(actions), size=states)
    target = rng.dirichlet(np.ones(actions), size=states)
    mu0 = rng.dirichlet(np.ones(states))
    reward = rng.uniform(size=(states, actions))

    def occupancy(policy):
        p_pi = np.einsum("sa,sat->st", policy, transition)
        d_s = np.linalg.solve(np.eye(states) - gamma * p_pi.T, (1 - gamma) * mu0)
        return d_s[:, None] * policy

    d_pi, d_data = occupancy(target), occupancy(behaviour)
    value = np.sum(d_pi * reward) / (1 - gamma)
    return dict(T=transition, target=target, mu0=mu0, reward=reward, d_pi=d_pi, d_data=d_data, gamma=gamma,
                value=value)


def saddle_point_ratio(transition, target, mu0, gamma, d_data, p):
    """zeta* = f'(nu* - g B nu*) at min_nu max_zeta J with exact expectations (the inner max in closed form).

    ``transition`` may be sub-stochastic: the missing mass is termination (DualDICE's terminal mask).
    """
    S, A = d_data.shape
    T, target, mu0, d_data = (jnp.asarray(x) for x in (transition, target, mu0, d_data))

    def inner_argmax(x):  # argmax_zeta x zeta - f*(zeta) = f'(x) = sign(x) |x|^(p - 1)
        return jnp.sign(x) * jnp.abs(x) ** (p - 1)

    def next_value(nu):  # E_{s' ~ T, a' ~ pi} nu(s', a'), 0 after termination
        return jnp.einsum("sat,tb,tb->sa", T, target, nu)

    def reduced(nu_flat):
        nu = nu_flat.reshape(S, A)
        zeta = jax.lax.stop_gradient(inner_argmax(nu - gamma * next_value(nu)))
        nu_initial = jnp.sum(mu0[:, None] * target * nu)[None]
        return dualdice.dualdice_objective(nu, next_value(nu), nu_initial, zeta, gamma, p, probabilities=d_data)

    fun = jax.jit(jax.value_and_grad(reduced))
    result = minimize(lambda x: tuple(np.asarray(v, np.float64) for v in fun(jnp.asarray(x))), np.zeros(S * A),
                      jac=True, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000})
    nu = jnp.asarray(result.x.reshape(S, A))
    return np.asarray(inner_argmax(nu - gamma * next_value(nu)))


@pytest.mark.parametrize("p", [1.5, 2.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_saddle_point_is_the_true_ratio(float64, p, seed):
    """min_nu max_zeta J with exact expectations: zeta* = f'(nu* - g B nu*) equals d^pi / d^D."""
    m = tabular(seed)
    ratio = saddle_point_ratio(m["T"], m["target"], m["mu0"], m["gamma"], m["d_data"], p)
    np.testing.assert_allclose(ratio, m["d_pi"] / m["d_data"], rtol=1e-4, atol=1e-4)
    assert np.sum(m["d_data"] * ratio * m["reward"]) / (1 - m["gamma"]) == pytest.approx(m["value"], rel=1e-4)


def test_with_termination_the_ratio_mean_is_the_occupancy_mass_below_one(float64):
    """Episodes that end (hopper falls) make the normalised discounted occupancy a sub-probability: with the
    terminal mask, DualDICE's saddle point is still d^pi / d^D, so E_D[w] = 1 - E[g^T] < 1 (T the steps to
    termination, from its own recursion), E_D[w r] / (1 - g) is still the value, and self-normalising w to
    mean 1 would overstate that value by 1 / E_D[w]. What stays 1 is the flow identity
    E_D[w (1 - g c)] / (1 - g), c(s, a) the probability of continuing."""
    m = tabular(3)
    S, A = m["d_data"].shape
    gamma, target, mu0 = m["gamma"], m["target"], m["mu0"]
    continues = np.random.default_rng(4).uniform(0.7, 0.95, (S, A))
    T = m["T"] * continues[..., None]
    p_pi = np.einsum("sa,sat->st", target, T)
    d_pi = np.linalg.solve(np.eye(S) - gamma * p_pi.T, (1 - gamma) * mu0)[:, None] * target
    ratio = saddle_point_ratio(T, target, mu0, gamma, m["d_data"], 1.5)
    np.testing.assert_allclose(ratio, d_pi / m["d_data"], rtol=1e-4, atol=1e-4)
    # E[g^T | s] = g E_{a ~ pi}[(1 - c) + c E_{s'} E[g^T | s']]
    discounted_end = np.linalg.solve(np.eye(S) - gamma * p_pi, gamma * np.sum(target * (1 - continues), 1))
    mass = np.sum(m["d_data"] * ratio)
    assert mass == pytest.approx(1 - mu0 @ discounted_end, rel=1e-4) and mass < 0.8
    value = np.sum(d_pi * m["reward"]) / (1 - gamma)
    assert np.sum(m["d_data"] * ratio * m["reward"]) / (1 - gamma) == pytest.approx(value, rel=1e-4)
    assert np.sum(m["d_data"] * ratio * (1 - gamma * continues)) / (1 - gamma) == pytest.approx(1.0, rel=1e-4)


def test_power_conjugate_is_the_conjugate():
    """f*(y) = sup_x x y - |x|^p / p, numerically."""
    x = np.linspace(-20, 20, 400001)
    for p in (1.5, 2.0, 3.0):
        for y in (-2.0, -0.3, 0.0, 0.7, 1.9):
            numeric = np.max(x * y - np.abs(x) ** p / p)
            assert float(dualdice.power_conjugate(jnp.float32(y), p)) == pytest.approx(numeric, abs=1e-4)


def _tabular_batch_sampler(m, batch_size):
    """Transitions drawn from d^D itself (so the estimator's target is exactly d^pi / d^D), one-hot features."""
    S, A = m["d_data"].shape
    eye_s, eye_a = jnp.eye(S), jnp.eye(A)
    log_d = jnp.log(jnp.asarray(m["d_data"].reshape(-1), jnp.float32))
    log_T, log_target, log_mu0 = (jnp.log(jnp.asarray(m[k], jnp.float32)) for k in ("T", "target", "mu0"))

    def sample(key):
        k_sa, k_next, k_next_action, k_init, k_init_action = jax.random.split(key, 5)
        sa = jax.random.categorical(k_sa, log_d, shape=(batch_size,))
        s, a = sa // A, sa % A
        s_next = jax.random.categorical(k_next, log_T[s, a])
        s_init = jax.random.categorical(k_init, log_mu0, shape=(batch_size,))
        rewards = jnp.asarray(m["reward"], jnp.float32)[s, a]
        return dict(observations=eye_s[s], actions=eye_a[a], next_observations=eye_s[s_next],
                    policy_next_actions=eye_a[jax.random.categorical(k_next_action, log_target[s_next])],
                    initial_observations=eye_s[s_init],
                    policy_initial_actions=eye_a[jax.random.categorical(k_init_action, log_target[s_init])],
                    terminals=jnp.zeros(batch_size), rewards=rewards)

    return sample


@pytest.mark.parametrize("seed, positive", [(2, False), (6, True)])
def test_sampled_training_recovers_ratio_and_value(seed, positive):
    """The estimator itself (networks, sampled batches, one sampled next action) on a tabular MDP whose
    d^pi and d^D are exact: ratio MAE <= 0.05 and off-policy value within 5 %, with zeta unconstrained or
    squared (``positive``: every ratio >= 0, same saddle point). (MDPs 2 and 6 have ratios from 0.1 to 3.3;
    far larger ratios need proportionally more samples.)"""
    m = tabular(seed)
    S, A = m["d_data"].shape
    steps = 15000
    spec = Spec(S, A, np.zeros(A, np.float32), np.ones(A, np.float32), np.zeros(S, np.float32),
                np.ones(S, np.float32))
    config = dualdice.Config(nu_lr=1e-3, zeta_lr=1e-3, gamma=m["gamma"], lr_decay_steps=steps, positive=positive)
    state = dualdice.init(config, spec, jax.random.PRNGKey(0))
    sample = _tabular_batch_sampler(m, config.batch_size)

    @jax.jit
    def train(state, key):
        def step(state, k):
            return dualdice.update(state, sample(k), k)[0], None
        return jax.lax.scan(step, state, jax.random.split(key, steps))[0]

    state = train(state, jax.random.PRNGKey(1))
    ratio = np.asarray(dualdice.ratio(state, jnp.repeat(jnp.eye(S), A, 0), jnp.tile(jnp.eye(A), (S, 1))))
    true_ratio = (m["d_pi"] / m["d_data"]).reshape(-1)
    assert np.mean(np.abs(ratio - true_ratio)) <= 0.05
    if positive:
        observations, actions = jax.random.normal(jax.random.PRNGKey(3), (2, 1000, S))
        assert float(jnp.min(dualdice.ratio(state, observations, actions[:, :A]))) >= 0.0
    # Off-policy evaluation from a fresh sample of the data: E_D[w r] / (1 - g).
    batch = _tabular_batch_sampler(m, 200_000)(jax.random.PRNGKey(2))
    weights = dualdice.ratio(state, batch["observations"], batch["actions"])
    estimate = float(dualdice.value_estimate(weights, batch["rewards"], m["gamma"]))
    assert estimate == pytest.approx(m["value"], rel=0.05)


def test_estimate_policy_value_from_trajectories():
    """The public off-policy evaluator on a dataset of behaviour trajectories of the tabular MDP (initial
    states = first states of the episodes): the target policy's value within 5 %."""
    from drorl.data.dataset import Dataset

    m = tabular(6)
    S, A = m["d_data"].shape
    rng = np.random.default_rng(0)
    episodes, horizon = 1000, 30
    behaviour = 0.5 * m["target"] + 0.5 / A  # half the target policy, half uniform: ratios 0.2 to 1.4
    s = rng.choice(S, size=episodes, p=m["mu0"])
    rows = {k: [] for k in ("s", "a", "r", "s_next")}
    for _ in range(horizon):
        a = np.array([rng.choice(A, p=behaviour[x]) for x in s])
        s_next = np.array([rng.choice(S, p=m["T"][x, y]) for x, y in zip(s, a)])
        for key, value in zip(rows, (s, a, m["reward"][s, a], s_next)):
            rows[key].append(value)
        s = s_next
    s, a, r, s_next = (np.stack(rows[k], axis=1).reshape(-1) for k in rows)  # episode-major order
    timeouts = np.zeros((episodes, horizon), bool)
    timeouts[:, -1] = True
    eye_s, eye_a = np.eye(S, dtype=np.float32), np.eye(A, dtype=np.float32)
    dataset = Dataset.from_arrays({"observations": eye_s[s], "actions": eye_a[a], "rewards": r.astype(np.float32),
                                   "next_observations": eye_s[s_next], "terminals": np.zeros(s.size, bool),
                                   "timeouts": timeouts.reshape(-1)})
    log_target = jnp.log(jnp.asarray(m["target"], jnp.float32))

    def target_policy(obs, key):
        return jax.nn.one_hot(jax.random.categorical(key, log_target[jnp.argmax(obs, -1)]), A)

    spec = Spec(S, A, np.zeros(A, np.float32), np.ones(A, np.float32), np.zeros(S, np.float32),
                np.ones(S, np.float32))
    config = dualdice.Config(nu_lr=1e-3, zeta_lr=1e-3, gamma=m["gamma"])
    value, state = estimate_policy_value(dataset, target_policy, config, steps=15000, spec=spec)
    assert value == pytest.approx(m["value"], rel=0.05)
    assert int(state.step) == 15000
