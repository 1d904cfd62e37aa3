"""BE-DROIL: the dual against the primal on a tabular MDP, and the weights on real updates."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from drorl.algos import be_droil
from drorl.data.dataset import Dataset
from drorl.robust import get_divergence
from drorl.train import RunSettings, train

from conftest import make_arrays


def tabular_problem(seed=0, states=3, actions=2, gamma=0.9):
    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.ones(states), size=(states, actions))  # T(s'|s,a)
    policy = rng.dirichlet(np.ones(actions), size=states)  # pi_D(a|s)
    mu0 = rng.dirichlet(np.ones(states))
    p_pi = np.einsum("sa,sat->st", policy, transition)
    d_s = np.linalg.solve(np.eye(states) - gamma * p_pi.T, (1 - gamma) * mu0)
    d_nominal = d_s[:, None, None] * policy[:, :, None] * transition  # d_D(s, a, s')
    loss = rng.uniform(0.0, 1.0, size=(states, actions))
    return dict(transition=transition, policy=policy, mu0=mu0, d=d_nominal, loss=loss, gamma=gamma)


def primal_worst_case_loss(p, divergence, rho):
    """max_w sum d_D w l  s.t. balance equations, sum d_D f(w) <= rho, w >= 0 (SLSQP)."""
    d, loss, policy, gamma, mu0 = p["d"], p["loss"], p["policy"], p["gamma"], p["mu0"]
    states, actions, _ = d.shape
    f = lambda w: np.asarray(divergence.f(jnp.asarray(w)))  # noqa: E731

    def balance(wflat):
        occ = d * wflat.reshape(d.shape)  # the perturbed occupancy d(s, a, s')
        inflow = occ.sum(axis=(0, 1))  # sum_{s~, a~} d(s~, a~, s)
        rhs = (1 - gamma) * mu0[:, None] * policy + gamma * inflow[:, None] * policy
        return (occ.sum(axis=2) - rhs).ravel()

    result = minimize(lambda w: -np.sum(d * w.reshape(d.shape) * loss[:, :, None]), np.ones(d.size),
                      method="SLSQP", bounds=[(0, None)] * d.size,
                      constraints=[{"type": "eq", "fun": balance},
                                   {"type": "ineq", "fun": lambda w: rho - np.sum(d.ravel() * f(w))}],
                      options={"ftol": 1e-13, "maxiter": 1000})
    assert result.success, result.message
    return -result.fun


def dual_minimum(p, divergence, rho):
    """min over Q(s, a), tau > 0 of the BE-DROIL dual with exact expectations under d_D."""
    d, loss, policy, gamma, mu0 = (jnp.asarray(p[k]) for k in ("d", "loss", "policy", "gamma", "mu0"))
    states, actions, _ = d.shape

    def objective(x):
        q = x[:-1].reshape(states, actions)
        tau = jnp.exp(x[-1])
        v_next = jnp.sum(policy * q, axis=1)  # E_{a' ~ pi_D(s')} Q(s', a')
        residual = be_droil.balance_residual(loss[:, :, None], q[:, :, None], v_next[None, None, :], 1.0, gamma)
        weights = be_droil.worst_case_weights(residual, tau, divergence, max_weight=1e6)
        q_initial = jnp.sum(mu0[:, None] * policy * q)[None]
        return be_droil.dual_objective(q_initial, residual, weights, tau, rho, gamma, divergence, probabilities=d)

    value_and_grad = jax.jit(jax.value_and_grad(objective))
    fun = lambda x: tuple(np.asarray(v, np.float64) for v in value_and_grad(jnp.asarray(x)))  # noqa: E731
    best = None
    for log_tau in (-2.0, 0.0, 2.0):
        result = minimize(fun, np.r_[np.zeros(states * actions), log_tau], jac=True, method="L-BFGS-B",
                          options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000})
        best = result.fun if best is None else min(best, result.fun)
    return best


@pytest.mark.parametrize("name, rho", [("softtv", 0.05), ("kl", 0.1), ("chi2", 0.1)])
@pytest.mark.parametrize("seed", [0, 1])
def test_dual_optimum_equals_primal_worst_case_loss(float64, name, rho, seed):
    divergence = get_divergence(name)
    p = tabular_problem(seed)
    nominal = float(np.sum(p["d"] * p["loss"][:, :, None]))
    primal = primal_worst_case_loss(p, divergence, rho)
    dual = dual_minimum(p, divergence, rho)
    assert primal > nominal + 1e-3  # the ball is large enough to matter
    assert dual == pytest.approx(primal, rel=1e-3)


def test_weights_follow_the_residual_and_favour_hard_transitions(tmp_path):
    """Half the demonstrations carry noisy actions (high imitation loss): after training, the dual puts
    more weight on them, and weights correlate positively with the residual e."""
    arrays = make_arrays(n=2000, obs_dim=4, act_dim=2)
    noisy = np.zeros(2000, bool)
    noisy[1000:] = True
    arrays["actions"][noisy] = np.clip(arrays["actions"][noisy] + np.random.default_rng(1).normal(0, 0.5, (1000, 2)),
                                       -1, 1)
    dataset = Dataset.from_arrays(arrays)
    config = be_droil.Config(hidden_dims=(64, 64), q_hidden_dims=(64, 64), rho=0.3)
    states, _ = train("be-droil", dataset, tmp_path / "run", RunSettings(steps=1500, seeds=(0,), updates_per_call=500),
                      config=config, progress=False)
    state = jax.tree_util.tree_map(lambda x: x[0], states)
    from drorl.train import device_data

    data = device_data(dataset)
    batch = {k: v[:2000] for k, v in data.items() if not k.startswith("initial_")}
    batch["initial_observations"] = data["initial_observations"]
    batch["initial_actions"] = data["initial_actions"]
    _, metrics = be_droil.update(state, batch, jax.random.PRNGKey(0))
    assert float(metrics["weight_loss_correlation"]) > 0.2
    _, residual, weights = be_droil.current_weights(state, batch)
    from scipy.stats import spearmanr

    assert spearmanr(np.asarray(weights), np.asarray(residual)).statistic > 0.9  # w* is increasing in e
    assert float(weights[noisy].mean()) > 1.2 * float(weights[~noisy].mean())


def test_balance_false_ablation_normalises_weights(tmp_path):
    dataset = Dataset.from_arrays(make_arrays(n=1000, obs_dim=4, act_dim=2))
    config = be_droil.Config(hidden_dims=(32,), q_hidden_dims=(32,), balance=False, q_lr=1e-2)
    _, run = train("be-droil", dataset, tmp_path / "run", RunSettings(steps=1000, seeds=(0,), updates_per_call=500),
                   config=config, progress=False)
    import json

    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["weight_mean"] == pytest.approx(1.0, abs=0.1) and last["lambda"] != 0.0


@pytest.mark.parametrize("initial_states", ["first", "all"])
def test_balance_equation_on_one_trajectory_pins_the_weights(initial_states):
    """Data = one trajectory s_0 .. s_{T-1}, sampled uniformly (the time-averaged occupancy). The
    balance equation alone then admits one w: T (1-g) g^t from the first state, 1 - g^(t+1) when every
    dataset state is an initial state (Config.initial_states)."""
    horizon, gamma = 30, 0.9
    d_data = np.full(horizon, 1.0 / horizon)
    mu0 = np.eye(horizon)[0] if initial_states == "first" else d_data
    # d_t = (1-g) mu0_t + g d_{t-1}: solve (I - g shift) d = (1-g) mu0 for d = d_data * w
    shift = np.eye(horizon, k=-1)
    w = np.linalg.solve((np.eye(horizon) - gamma * shift) * d_data[None, :], (1 - gamma) * mu0)
    t = np.arange(horizon)
    expected = horizon * (1 - gamma) * gamma**t if initial_states == "first" else 1 - gamma ** (t + 1)
    np.testing.assert_allclose(w, expected, rtol=1e-12)


def test_initial_states_all_uses_the_batch_pairs():
    dataset = Dataset.from_arrays(make_arrays(n=64, obs_dim=4, act_dim=2))
    from drorl.runs import spec_for
    from drorl.train import device_data

    data = device_data(dataset)
    batch = {k: v for k, v in data.items() if not k.startswith("initial_")}
    spec = spec_for(dataset, None)
    config = be_droil.Config(hidden_dims=(16,), q_hidden_dims=(16,), initial_states="all")
    state = be_droil.init(config, spec, jax.random.PRNGKey(0))
    garbage = {"initial_observations": jnp.full((64, 4), jnp.nan), "initial_actions": jnp.full((64, 2), jnp.nan)}
    own = {"initial_observations": batch["observations"], "initial_actions": batch["actions"]}
    new_all, m_all = be_droil.update(state, {**batch, **garbage}, jax.random.PRNGKey(1))
    first = state.replace(config=dataclasses.replace(config, initial_states="first"))
    new_first, m_first = be_droil.update(first, {**batch, **own}, jax.random.PRNGKey(1))
    assert np.isfinite(float(m_all["dual_loss"])) and float(m_all["dual_loss"]) == float(m_first["dual_loss"])
    for a, b in zip(jax.tree_util.tree_leaves(new_all.q_params), jax.tree_util.tree_leaves(new_first.q_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
