"""BE-DROIL: the dual against the primal on a tabular MDP, and the weights on real updates."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from drorl.algos import bc, be_droil
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
    config = be_droil.Config(policy=bc.PolicyConfig(hidden_dims=(64, 64)), q_hidden_dims=(64, 64), rho=0.3)
    states, _ = train("be-droil", dataset, tmp_path / "run", RunSettings(steps=1500, seeds=(0,), updates_per_call=500),
                      config=config, progress=False)
    state = jax.tree_util.tree_map(lambda x: x[0], states)
    from drorl.data.sampling import device_arrays, every_row

    batch = every_row(device_arrays(dataset))
    _, metrics = be_droil.update(state, batch, jax.random.PRNGKey(0))
    assert float(metrics["weight_loss_correlation"]) > 0.2
    _, residual, weights = be_droil.current_weights(state, batch)
    from scipy.stats import spearmanr

    assert spearmanr(np.asarray(weights), np.asarray(residual)).statistic > 0.9  # w* is increasing in e
    assert float(weights[noisy].mean()) > 1.2 * float(weights[~noisy].mean())


def test_balance_false_ablation_normalises_weights(tmp_path):
    dataset = Dataset.from_arrays(make_arrays(n=1000, obs_dim=4, act_dim=2))
    """Without the balance equation, lambda is the multiplier of E[w] = 1: after training, the weights
    over every row average 1, and with lambda reset to 0 they do not (lambda is what normalises them)."""
    from drorl.data.sampling import device_arrays, every_row

    config = be_droil.Config(policy=bc.PolicyConfig(hidden_dims=(32,)), q_hidden_dims=(32,), balance=False, q_lr=1e-2)
    states, _ = train("be-droil", dataset, tmp_path / "run", RunSettings(steps=1000, seeds=(0,), updates_per_call=500),
                      config=config, progress=False)
    state = jax.tree_util.tree_map(lambda x: x[0], states)
    batch = every_row(device_arrays(dataset))
    _, _, weights = be_droil.current_weights(state, batch)
    assert float(jnp.mean(weights)) == pytest.approx(1.0, abs=0.05)
    unnormalised = state.replace(dual=state.dual.replace(params={**state.dual.params, "lam": jnp.zeros(())}))
    _, _, raw = be_droil.current_weights(unnormalised, batch)
    assert abs(float(jnp.mean(raw)) - 1.0) > 0.2


def episodes_dataset(episodes, terminal_last=()):
    """A Dataset of tabular episodes [(states, actions), ...]: state and action ids as 1-D floats; the
    episodes listed in ``terminal_last`` end in a terminal, the others in a time-out."""
    obs, act, nxt, terms, outs = [], [], [], [], []
    for i, (states, actions) in enumerate(episodes):
        obs += states[:-1]
        act += actions
        nxt += states[1:]
        terms += [False] * (len(actions) - 1) + [i in terminal_last]
        outs += [False] * (len(actions) - 1) + [i not in terminal_last]
    column = lambda x: np.asarray(x, np.float32)[:, None]  # noqa: E731
    return Dataset.from_arrays({"observations": column(obs), "actions": column(act), "next_observations": column(nxt),
                                "rewards": np.zeros(len(act), np.float32), "terminals": np.asarray(terms),
                                "timeouts": np.asarray(outs)})


def tabular_rows(dataset, occupancy, gamma):
    """Every row's (s, a) and balance-equation next pair (drorl's own ``next_pair``) as integer ids, the
    episodes' first pairs, the continuation mask, and the row probabilities of the occupancy estimate."""
    from drorl.data.sampling import device_arrays, discounted_occupancy, every_row
    from drorl.scores import spec_for

    config = be_droil.Config(policy=bc.PolicyConfig(hidden_dims=(4,)), q_hidden_dims=(4,), occupancy=occupancy, gamma=gamma)
    state = be_droil.init(config, spec_for(dataset, None), jax.random.PRNGKey(0))
    batch = every_row(device_arrays(dataset))
    next_obs, next_actions, continues = be_droil.next_pair(state, batch)
    ids = lambda x: np.asarray(x)[:, 0].round().astype(int)  # noqa: E731
    probs = (discounted_occupancy(dataset, gamma) if occupancy == "discounted"
             else np.full(len(dataset), 1.0 / len(dataset)))
    return dict(s=ids(batch["observations"]), a=ids(batch["actions"]), s_next=ids(next_obs),
                a_next=ids(next_actions), continues=np.asarray(continues, np.float64),
                s0=ids(batch["initial_observations"]), a0=ids(batch["initial_actions"]), p=probs)


CAP = 20.0  # w <= CAP in primal and dual alike: keeps SoftTV's dual finite and smooth for L-BFGS


def tabular_dual(rows, loss_table, gamma, rho, divergence):
    """L(w*; Q, tau) of drorl's dual functions with a tabular Q (x = [Q.ravel(), log tau]), exact
    expectations under the rows' probabilities; w* capped at CAP (the dual of the primal with w <= CAP)."""
    shape = loss_table.shape
    p = jnp.asarray(rows["p"])

    def objective(x, weights=None):
        q = x[:-1].reshape(shape)
        tau = jnp.exp(x[-1])
        residual = be_droil.balance_residual(jnp.asarray(loss_table[rows["s"], rows["a"]]), q[rows["s"], rows["a"]],
                                             q[rows["s_next"], rows["a_next"]], jnp.asarray(rows["continues"]), gamma)
        w = be_droil.worst_case_weights(residual, tau, divergence, max_weight=CAP) if weights is None else weights
        return be_droil.dual_objective(q[rows["s0"], rows["a0"]], residual, w, tau, rho, gamma, divergence,
                                       probabilities=p)

    return objective


def revisiting_episodes(seed=0, n=6, states=3, actions=2):
    """Episodes of a 3-state MDP under a stochastic expert: states recur; lengths 4 to 9."""
    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.ones(states), size=(states, actions))
    policy = rng.dirichlet(np.ones(actions), size=states)
    episodes = []
    for _ in range(n):
        s = [int(rng.integers(states))]
        a = []
        for _ in range(int(rng.integers(4, 10))):
            a.append(int(rng.choice(actions, p=policy[s[-1]])))
            s.append(int(rng.choice(states, p=transition[s[-1], a[-1]])))
        episodes.append((s, a))
    return episodes


CHAIN = [(list(range(31)), [0] * 30)]  # one deterministic trajectory of 30 distinct states


@pytest.mark.parametrize("problem", ["chain", "revisits"])
def test_w_equals_one_satisfies_the_balance_equation_under_the_discounted_occupancy(float64, problem):
    """At w = 1 every Q coefficient of the dual cancels (the balance equation holds) with the discounted
    estimate, for cut and terminal episodes alike; with uniform rows it does not (the old estimate)."""
    gamma = 0.9
    dataset = (episodes_dataset(CHAIN) if problem == "chain"
               else episodes_dataset(revisiting_episodes(), terminal_last=(1, 4)))
    loss = np.random.default_rng(2).uniform(size=(31, 2))
    divergence = get_divergence("softtv")
    x0 = jnp.asarray(np.r_[np.random.default_rng(3).normal(size=62), 0.0])
    for occupancy, holds in (("discounted", True), ("uniform", False)):
        rows = tabular_rows(dataset, occupancy, gamma)
        objective = tabular_dual(rows, loss, gamma, 0.1, divergence)
        q_gradient = jax.grad(lambda x: objective(x, weights=jnp.ones(len(dataset))))(x0)[:-1]
        assert (float(jnp.max(jnp.abs(q_gradient))) < 1e-8) == holds, occupancy


def minimise_dual(objective, size):
    value_and_grad = jax.jit(jax.value_and_grad(objective))
    fun = lambda x: tuple(np.asarray(v, np.float64) for v in value_and_grad(jnp.asarray(x)))  # noqa: E731
    best = None
    for log_tau in (-2.0, 0.0, 2.0):
        result = minimize(fun, np.r_[np.zeros(size), log_tau], jac=True, method="L-BFGS-B",
                          options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000})
        best = result if best is None or result.fun < best.fun else best
    return best


@pytest.mark.parametrize("problem", ["chain", "revisits"])
@pytest.mark.parametrize("rho", [0.01, 0.1, 0.3])
def test_dual_is_bounded_under_the_discounted_occupancy(float64, problem, rho):
    """Minimised over tabular Q and tau the dual stays between the nominal and the largest loss (on the
    chain w = 1 is the only feasible point; the infimum there sits at tau -> 0, which L-BFGS only
    approaches, so only the bounds are asserted)."""
    gamma = 0.9
    dataset = (episodes_dataset(CHAIN) if problem == "chain"
               else episodes_dataset(revisiting_episodes(), terminal_last=(1, 4)))
    loss = np.random.default_rng(2).uniform(size=(31, 2))
    rows = tabular_rows(dataset, "discounted", gamma)
    nominal = float(np.sum(rows["p"] * loss[rows["s"], rows["a"]]))
    best = minimise_dual(tabular_dual(rows, loss, gamma, rho, get_divergence("softtv")), loss.size)
    assert nominal - 1e-6 <= best.fun <= loss[rows["s"], rows["a"]].max() + 1e-6


def test_uniform_occupancy_leaves_the_dual_unbounded_on_distinct_states(float64):
    """The old estimate: on one trajectory of distinct states at rho = 0.05 < SoftTV(T (1-g) g^t) = 0.135
    (T = 30, g = 0.9), the dual minimised over tabular Q and tau runs far below any loss."""
    dataset = episodes_dataset(CHAIN)
    loss = np.random.default_rng(2).uniform(size=(31, 2))
    rows = tabular_rows(dataset, "uniform", 0.9)
    best = minimise_dual(tabular_dual(rows, loss, 0.9, 0.05, get_divergence("softtv")), loss.size)
    assert best.fun < -10.0


def primal_on_rows(rows, loss_table, gamma, rho, divergence):
    """max_w sum_k p_k w_k l_k s.t. the balance equation on every pair, sum_k p_k f(w_k) <= rho, 0 <= w <= CAP,
    with one weight per distinct (s, a, s', a', continues) (rows alike share the optimum: concavity)."""
    keys = np.stack([rows["s"], rows["a"], rows["s_next"], rows["a_next"], rows["continues"]], axis=1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    p = np.bincount(inverse, weights=rows["p"])
    loss = loss_table[unique[:, 0].astype(int), unique[:, 1].astype(int)]
    pairs = sorted({(int(s), int(a)) for s, a in unique[:, :2]} | {(int(s), int(a)) for s, a in unique[:, 2:4]})
    mu0 = {pair: 0.0 for pair in pairs}
    for s, a in zip(rows["s0"], rows["a0"]):
        mu0[(int(s), int(a))] += 1.0 / len(rows["s0"])
    f = lambda w: np.asarray(divergence.f(jnp.asarray(w)))  # noqa: E731

    def balance(w):
        out = []
        for pair in pairs:
            here = np.all(unique[:, :2] == pair, axis=1)
            arriving = np.all(unique[:, 2:4] == pair, axis=1) * unique[:, 4]
            out.append(np.sum(p * w * here) - (1 - gamma) * mu0[pair] - gamma * np.sum(p * w * arriving))
        return np.asarray(out)

    result = minimize(lambda w: -np.sum(p * w * loss), np.ones(len(p)), method="SLSQP", bounds=[(0, CAP)] * len(p),
                      constraints=[{"type": "eq", "fun": balance},
                                   {"type": "ineq", "fun": lambda w: rho - np.sum(p * f(w))}],
                      options={"ftol": 1e-13, "maxiter": 1000})
    assert result.success, result.message
    return -result.fun


@pytest.mark.parametrize("seed", [0, 1])
def test_dual_equals_primal_on_sampled_demonstrations_and_weights_follow_the_loss(float64, seed):
    """Demonstrations that revisit states, d_D their empirical discounted occupancy: the minimised dual
    equals the primal worst-case loss, and the optimal w* correlates positively with the loss."""
    gamma, rho = 0.9, 0.1
    divergence = get_divergence("softtv")
    dataset = episodes_dataset(revisiting_episodes(seed), terminal_last=(1, 4))
    loss = np.random.default_rng(seed + 10).uniform(size=(31, 2))
    rows = tabular_rows(dataset, "discounted", gamma)
    nominal = float(np.sum(rows["p"] * loss[rows["s"], rows["a"]]))
    objective = tabular_dual(rows, loss, gamma, rho, divergence)
    best = minimise_dual(objective, loss.size)
    primal = primal_on_rows(rows, loss, gamma, rho, divergence)
    assert primal > nominal + 1e-3  # the ball gives the adversary room
    assert best.fun == pytest.approx(primal, rel=1e-3)
    q, tau = best.x[:-1].reshape(loss.shape), np.exp(best.x[-1])
    residual = be_droil.balance_residual(loss[rows["s"], rows["a"]], q[rows["s"], rows["a"]],
                                         q[rows["s_next"], rows["a_next"]], rows["continues"], gamma)
    weights = np.asarray(be_droil.worst_case_weights(jnp.asarray(residual), tau, divergence, CAP))
    per_row_loss = loss[rows["s"], rows["a"]]
    assert np.corrcoef(weights, per_row_loss)[0, 1] > 0.0


def test_uniform_occupancy_pins_the_time_profile_on_one_trajectory(float64):
    """Under uniform rows, the only w at which the dual's Q-gradient vanishes on one trajectory of
    distinct states is w_t = T (1 - g) g^t (the runaway of the committed uniform-occupancy runs). The
    Q-gradient is linear in w; solving it with drorl's dual recovers that profile."""
    gamma, horizon = 0.9, 30
    dataset = episodes_dataset(CHAIN)
    rows = tabular_rows(dataset, "uniform", gamma)
    loss = np.zeros((31, 2))
    objective = tabular_dual(rows, loss, gamma, 0.1, get_divergence("softtv"))
    x0 = jnp.zeros(63)
    gradient = lambda w: jax.grad(lambda x: objective(x, weights=w))(x0)[:-1]  # noqa: E731
    offset = np.asarray(gradient(jnp.zeros(horizon)))
    columns = np.stack([np.asarray(gradient(jnp.eye(horizon)[i])) - offset for i in range(horizon)], axis=1)
    used = [2 * t for t in range(horizon)]  # Q(s_t, a = 0) for t < T: one equation per row
    w = np.linalg.solve(columns[used], -offset[used])
    t = np.arange(horizon)
    np.testing.assert_allclose(w, horizon * (1 - gamma) * gamma**t, rtol=1e-10)


def test_discounted_sampler_draws_the_exact_occupancy():
    """Row frequencies of ``discounted_batch`` over many draws match ``discounted_occupancy`` (episodes of
    12, 4 and 30 steps), and each row's restart pair is its own episode's first pair."""
    from drorl.data.sampling import device_arrays, discounted_batch, discounted_occupancy

    dataset = episodes_dataset([(list(range(13)), [0] * 12), (list(range(5)), [1] * 4), (list(range(31)), [0] * 30)])
    data = {**device_arrays(dataset), "rewards": jnp.arange(len(dataset), dtype=jnp.float32)}  # reward = row id
    draw = jax.jit(lambda k: discounted_batch(data, k, 4096, 0.8))
    batches = [draw(k) for k in jax.random.split(jax.random.PRNGKey(0), 50)]
    rows = np.concatenate([np.asarray(b["rewards"]) for b in batches]).astype(int)
    exact = discounted_occupancy(dataset, 0.8)
    assert exact.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(np.bincount(rows, minlength=len(dataset)) / rows.size, exact, atol=4e-3)
    restart = np.concatenate([np.asarray(b["restart_actions"])[:, 0] for b in batches])
    np.testing.assert_array_equal(restart, dataset.initial_actions[dataset.episode_index[rows], 0])


def test_initial_states_all_uses_the_batch_pairs():
    dataset = Dataset.from_arrays(make_arrays(n=64, obs_dim=4, act_dim=2))
    from drorl.scores import spec_for
    from drorl.data.sampling import EPISODE_KEYS, device_arrays, every_row

    batch = {k: v for k, v in every_row(device_arrays(dataset)).items() if k not in EPISODE_KEYS}
    spec = spec_for(dataset, None)
    config = be_droil.Config(policy=bc.PolicyConfig(hidden_dims=(16,)), q_hidden_dims=(16,), initial_states="all")
    state = be_droil.init(config, spec, jax.random.PRNGKey(0))
    garbage = {"initial_observations": jnp.full((64, 4), jnp.nan), "initial_actions": jnp.full((64, 2), jnp.nan)}
    own = {"initial_observations": batch["observations"], "initial_actions": batch["actions"]}
    new_all, m_all = be_droil.update(state, {**batch, **garbage}, jax.random.PRNGKey(1))
    first = state.replace(config=dataclasses.replace(config, initial_states="first"))
    new_first, m_first = be_droil.update(first, {**batch, **own}, jax.random.PRNGKey(1))
    assert np.isfinite(float(m_all["dual_loss"])) and float(m_all["dual_loss"]) == float(m_first["dual_loss"])
    for a, b in zip(jax.tree_util.tree_leaves(new_all.dual.params), jax.tree_util.tree_leaves(new_first.dual.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
