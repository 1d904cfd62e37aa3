"""StackelbergLearner (drorl.algos.stackelberg) on problems whose answers are known: the follower's kernel
loss alone recovers a policy's true Q on a stochastic tabular MDP, the leader's step is the dense total
derivative of the algorithm's own objectives, and the whole update moves the policy toward the better
action (discrete and continuous). The total derivative and the kernel statistics themselves are checked
in tests/test_total_derivative.py and tests/test_kernel_bellman.py (acceptance checks 1 and 2)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from drorl.algos import stackelberg
from drorl.algos.base import Spec
from drorl.errors import DrorlError
from drorl.nn.train_state import TrainState, gradient_step

N_STATES, N_ACTIONS, GAMMA = 4, 2, 0.9


def tabular_spec(obs_dim: int, num_actions: int | None = N_ACTIONS, act_dim: int = 1) -> Spec:
    """Unscaled observations (one-hot states), so that networks without hidden layers are tables."""
    high = np.full(act_dim, num_actions - 1.0 if num_actions else 1.0, np.float32)
    low = np.zeros(act_dim, np.float32) if num_actions else -high
    return Spec(obs_dim, act_dim, low, high, np.zeros(obs_dim, np.float32), np.ones(obs_dim, np.float32),
                num_actions=num_actions)


def set_table(params, table):
    """A network without hidden layers (one Dense on one-hot states) set to q(s, a) = table[s, a]."""
    dense = params["params"]["Dense_0"]
    return {"params": {"Dense_0": {"kernel": jnp.asarray(table, dense["kernel"].dtype),
                                   "bias": jnp.zeros_like(dense["bias"])}}}


def table_of(params):
    dense = params["params"]["Dense_0"]
    return dense["kernel"] + dense["bias"]


def test_follower_kernel_loss_alone_recovers_the_policys_true_q():
    """Acceptance check 3 through the algorithm's own terms (residual in q's units, terminal mask,
    q(s', pi) of a categorical policy, U-statistic with the median bandwidth): with the Bellman term only
    (no pessimism) and fresh transitions of a stochastic MDP covering every (s, a) each step, Adam on the
    U-statistic converges to the normalised true Q, (1 - g) Q^pi / c."""
    rng = np.random.default_rng(0)
    transitions = rng.dirichlet(np.ones(N_STATES), size=(N_STATES, N_ACTIONS))  # P(s' | s, a)
    p_terminal = rng.uniform(0.1, 0.3, size=(N_STATES, N_ACTIONS))
    reward = rng.normal(size=(N_STATES, N_ACTIONS))
    policy = rng.dirichlet(np.ones(N_ACTIONS), size=N_STATES)
    # Q = r + g (1 - p_term) sum_s' P(s'|s, a) sum_a' pi(a'|s') Q(s', a')
    continuation = ((1 - p_terminal)[..., None, None] * transitions[..., None] * policy[None, None]).reshape(
        N_STATES * N_ACTIONS, N_STATES * N_ACTIONS)
    q_true = np.linalg.solve(np.eye(N_STATES * N_ACTIONS) - GAMMA * continuation, reward.ravel())
    scale = 2.0
    target = (1 - GAMMA) * q_true.reshape(N_STATES, N_ACTIONS) / scale

    config = stackelberg.Config(policy_hidden_dims=(), q_hidden_dims=(), gamma=GAMMA, batch_size=64,
                                reward_scale=scale)
    state = stackelberg.init(config, tabular_spec(N_STATES), jax.random.PRNGKey(0))
    state = state.replace(policy=state.policy.replace(params=set_table(state.policy.params, np.log(policy))),
                          q=TrainState.create(state.q.params, optax.adam(optax.exponential_decay(0.03, 1500, 0.1))))
    eye = jnp.eye(N_STATES)

    def step(q, key):
        k_pair, k_next, k_term = jax.random.split(key, 3)
        pairs = jax.random.randint(k_pair, (64,), 0, N_STATES * N_ACTIONS)
        s, a = jnp.divmod(pairs, N_ACTIONS)
        s_next = jax.random.categorical(k_next, jnp.log(jnp.asarray(transitions, jnp.float32))[s, a])
        batch = {"observations": eye[s], "actions": a[:, None].astype(jnp.float32),
                 "rewards": jnp.asarray(reward, jnp.float32)[s, a], "next_observations": eye[s_next],
                 "terminals": (jax.random.uniform(k_term, (64,)) < jnp.asarray(p_terminal)[s, a]).astype(jnp.float32),
                 "initial_observations": eye[s]}
        data = stackelberg.prepare_batch(state, batch)
        noise = jnp.zeros((3, 64, 1))

        def bellman_term(phi):
            return stackelberg.game_terms(state, state.policy.params, phi, data, noise, "u")["kernel_loss"]

        return gradient_step(q, bellman_term)[0], None

    q, _ = jax.jit(lambda q, keys: jax.lax.scan(step, q, keys))(state.q, jax.random.split(jax.random.PRNGKey(1), 3000))
    np.testing.assert_allclose(table_of(q.params), target, atol=0.02 * np.abs(target).max())


def bandit(num_actions: int | None):
    """One initial state s0 = (1, 0) whose every transition terminates in (0, 1); the data cover every
    action. Discrete: reward 1 for action 0, 0 for action 1. Continuous: reward 1 - (a - 0.5)^2, actions
    uniform on [-1, 1]. (Train with a small discount: q = (1 - g) Q puts one step's reward at scale 1 - g.)"""
    rng = np.random.default_rng(0)
    n = 64
    if num_actions is None:
        actions = rng.uniform(-1, 1, size=(n, 1)).astype(np.float32)
        rewards = 1.0 - (actions[:, 0] - 0.5) ** 2
    else:
        actions = (np.arange(n) % num_actions).astype(np.float32)[:, None]
        rewards = (actions[:, 0] == 0).astype(np.float32)
    return {"observations": np.tile([1.0, 0.0], (n, 1)).astype(np.float32), "actions": actions,
            "rewards": rewards.astype(np.float32), "next_observations": np.tile([0.0, 1.0], (n, 1)).astype(np.float32),
            "terminals": np.ones(n, np.float32), "initial_observations": np.tile([1.0, 0.0], (n, 1)).astype(np.float32)}


def train_on(batch, config, spec, steps):
    state = stackelberg.init(config, spec, jax.random.PRNGKey(0))
    batch = jax.tree.map(jnp.asarray, batch)

    def step(state, key):
        return stackelberg.update(state, batch, key)

    keys = jax.random.split(jax.random.PRNGKey(1), steps)
    return state, jax.jit(lambda s, keys: jax.lax.scan(step, s, keys))(state, keys)


@pytest.mark.parametrize("simultaneous, pessimism", [(False, "absolute"), (True, "absolute"), (False, "relative")])
def test_leader_moves_a_categorical_policy_toward_the_better_action(simultaneous, pessimism):
    """From a uniform start, the full update (follower step, then the leader's total derivative or, in the
    ablation, its partial gradient) makes action 0, the one with reward 1, the greedy and likely one; a
    leader that descended f1 instead of ascending it would move the other way. Relative pessimism too."""
    config = stackelberg.Config(policy_hidden_dims=(), q_hidden_dims=(), gamma=0.5, batch_size=64, policy_lr=0.05,
                                q_lr=0.05, simultaneous=simultaneous, pessimism=pessimism,
                                leader_states="dataset" if pessimism == "relative" else "initial")
    state, (trained, metrics) = train_on(bandit(2), config, tabular_spec(2), 200)
    logits = stackelberg.networks(config, 1, 2).policy.apply(trained.policy.params, jnp.array([[1.0, 0.0]]))
    probs = jax.nn.softmax(logits)
    assert float(probs[0, 0]) > 0.9, probs
    assert float(stackelberg.act(trained, jnp.array([[1.0, 0.0]]), jax.random.PRNGKey(0))[0, 0]) == 0.0
    assert np.all(np.isfinite(np.asarray(metrics["leader_grad_norm"])))


def test_leader_moves_a_tanh_gaussian_policy_toward_the_better_action():
    """Continuous actions: reward 1 - (a - 0.5)^2 on uniformly covered actions; the policy's mean action,
    starting near 0, moves to within 0.15 of 0.5."""
    config = stackelberg.Config(policy_hidden_dims=(), q_hidden_dims=(16,), gamma=0.5, batch_size=64,
                                policy_lr=0.02, q_lr=0.01)
    state, (trained, _) = train_on(bandit(None), config, tabular_spec(2, None), 500)
    s0 = jnp.array([[1.0, 0.0]])
    before = float(stackelberg.act(state, s0, jax.random.PRNGKey(0))[0, 0])
    after = float(stackelberg.act(trained, s0, jax.random.PRNGKey(0))[0, 0])
    assert abs(before) < 0.3 and abs(after - 0.5) < 0.15, (before, after)


@pytest.mark.parametrize("q_hidden_dims, curvature, pessimism",
                         [((3,), "v", "absolute"), ((), "gauss-newton", "absolute"), ((3,), "v", "relative"),
                          ((), "gauss-newton", "relative")])
def test_leader_gradient_is_the_dense_total_derivative_of_the_algorithms_objectives(float64, q_hidden_dims,
                                                                                   curvature, pessimism):
    """The leader step wires the algorithm's f1 and f2 into the total derivative: on a tiny discrete problem
    it matches grad_theta f1 - M^T (H + beta I)^{-1} grad_phi f1 with H and M the dense Hessian and mixed block
    of f2 (V-statistic; beta above H's most negative eigenvalue, CG run to convergence). With q linear in phi
    (no hidden layer) the Gauss-Newton curvature is that Hessian, and the Gauss-Newton mixed block is the
    pessimism term's plus 2 lambda J_phi^T K J_theta / n^2 (residual Jacobians): the exact mixed block's
    residual-weighted second derivatives, which made the learner collapse on CartPole, must be left out (they
    change the answer here). The simultaneous ablation returns grad_theta f1 alone. Both pessimism terms."""
    rng = np.random.default_rng(1)
    n, obs_dim = 12, 3
    batch = {"observations": rng.normal(size=(n, obs_dim)), "actions": rng.integers(2, size=(n, 1)).astype(float),
             "rewards": rng.normal(size=n), "next_observations": rng.normal(size=(n, obs_dim)),
             "terminals": (rng.random(n) < 0.3).astype(float), "initial_observations": rng.normal(size=(n, obs_dim))}
    spec = tabular_spec(obs_dim)
    base = stackelberg.Config(policy_hidden_dims=(3,), q_hidden_dims=q_hidden_dims, batch_size=n, kernel_weight=2.0,
                              follower_curvature=curvature, pessimism=pessimism,
                              leader_states="dataset" if pessimism == "relative" else "initial")
    state = stackelberg.init(base, spec, jax.random.PRNGKey(0))
    state = jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
    data = stackelberg.prepare_batch(state, jax.tree.map(jnp.asarray, batch))
    noise = jnp.zeros((3, n, 1))
    theta, phi = state.policy.params, state.q.params
    flat_theta, unravel_theta = ravel_pytree(theta)
    flat_phi, unravel_phi = ravel_pytree(phi)
    f1 = lambda t, p: stackelberg.leader(state, data, noise)(unravel_theta(t), unravel_phi(p))  # noqa: E731
    f2 = lambda t, p: stackelberg.follower(state, data, noise, "v")(unravel_theta(t), unravel_phi(p))[0]  # noqa: E731

    def residuals(t, p):
        return stackelberg.game_terms(state, unravel_theta(t), unravel_phi(p), data, noise, "v")["residuals"]

    def pessimism(t, p):
        return jnp.mean(stackelberg.game_terms(state, unravel_theta(t), unravel_phi(p), data, noise, "v")
                        ["pessimism_values"])

    @jax.jit
    def dense_pieces(t, p):
        return (jax.hessian(f2, argnums=1)(t, p), jax.jacobian(jax.grad(f2, argnums=1), argnums=0)(t, p),
                *jax.grad(f1, argnums=(0, 1))(t, p), *jax.jacobian(residuals, argnums=(0, 1))(t, p),
                jax.jacobian(jax.grad(pessimism, argnums=1), argnums=0)(t, p))

    hessian, mixed, grad_theta, grad_phi, jac_theta, jac_phi, mixed_pessimism = map(
        np.asarray, dense_pieces(flat_theta, flat_phi))
    if curvature == "gauss-newton":
        exact_mixed = mixed
        mixed = mixed_pessimism + 2 * base.kernel_weight * jac_phi.T @ np.asarray(data["gram"]) @ jac_theta / n ** 2
        assert np.linalg.norm(mixed - exact_mixed) > 0.1 * np.linalg.norm(exact_mixed)  # the premise
    beta = max(0.0, -np.linalg.eigvalsh(hessian).min()) + 0.5
    exact = grad_theta - mixed.T @ np.linalg.solve(hessian + beta * np.eye(len(flat_phi)), grad_phi)

    config = dataclasses.replace(base, beta_initial=beta, beta_floor=beta, cg_iters=4 * len(flat_phi))
    ours, info = jax.jit(stackelberg.leader_gradient)(state.replace(config=config), phi, data, noise)
    assert float(info["cg_negative_curvature"]) == 0.0
    assert np.linalg.norm(ravel_pytree(ours)[0] - exact) < 1e-4 * np.linalg.norm(exact)
    assert np.linalg.norm(exact - grad_theta) > 0.1 * np.linalg.norm(exact)  # the Stackelberg term matters

    ablation = state.replace(config=dataclasses.replace(base, simultaneous=True))
    simultaneous, _ = jax.jit(stackelberg.leader_gradient)(ablation, phi, data, noise)
    np.testing.assert_allclose(ravel_pytree(simultaneous)[0], grad_theta, rtol=1e-10)


def test_the_kernel_loss_sees_an_error_in_the_action_gap():
    """An error that raises one action's q and lowers the other's at the same states (the action gap, all a greedy
    policy reads) must cost as much in the kernel loss as an error of the same size in both actions. With one
    Gaussian on (state, one-hot action) and the median bandwidth it cost about 6 % as much (one state's two actions
    had K = 0.88 on CartPole-like states), and the learner collapsed onto one action (issue 20). Residuals are set
    through the rewards: every transition terminates and q = 0, so R = r."""
    rng = np.random.default_rng(0)
    n, obs_dim = 256, 4
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    actions = rng.integers(2, size=n)
    spec = Spec(obs_dim, 1, np.zeros(1, np.float32), np.ones(1, np.float32), np.zeros(obs_dim, np.float32),
                np.ones(obs_dim, np.float32), num_actions=2)
    config = stackelberg.Config(policy_hidden_dims=(8,), q_hidden_dims=(8,), batch_size=n)
    state = stackelberg.init(config, spec, jax.random.PRNGKey(0))
    zero_q = jax.tree.map(jnp.zeros_like, state.q.params)

    def kernel_loss(rewards):
        batch = {"observations": obs, "actions": actions[:, None].astype(np.float32), "rewards": rewards,
                 "next_observations": obs, "terminals": np.ones(n, np.float32), "initial_observations": obs}
        data = stackelberg.prepare_batch(state, jax.tree.map(jnp.asarray, batch))
        terms = stackelberg.game_terms(state, state.policy.params, zero_q, data, jnp.zeros((3, n, 1)), "v")
        np.testing.assert_allclose(terms["residuals"], rewards, atol=1e-6)  # the premise: R = r
        return float(terms["kernel_loss"])

    level = kernel_loss(np.ones(n, np.float32))
    gap = kernel_loss(np.where(actions == 0, 1.0, -1.0).astype(np.float32))
    assert gap > 0.5 * level > 0, (gap, level)


def test_relative_pessimism_scores_the_data_policy_zero_whatever_the_follower_does():
    """With pessimism="relative" both players read E_D[q(s, pi) - q(s, a)]: a policy that takes the data's
    actions scores exactly 0 for every q, and adding a constant to q, which moves the absolute term by that
    constant, leaves the relative one unchanged (the follower cannot lower a policy's score by a uniform shift,
    only by Bellman-consistent differences between its actions and the data's)."""
    rng = np.random.default_rng(3)
    n, obs_dim = 32, 3
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    batch = {"observations": obs, "actions": np.zeros((n, 1), np.float32), "rewards": rng.normal(size=n),
             "next_observations": rng.normal(size=(n, obs_dim)), "terminals": np.zeros(n),
             "initial_observations": rng.normal(size=(n, obs_dim))}
    config = stackelberg.Config(policy_hidden_dims=(), q_hidden_dims=(8,), batch_size=n, pessimism="relative",
                                leader_states="dataset", kernel_weight=1.0)  # small: f2 - lambda L_K loses no digits
    state = stackelberg.init(config, tabular_spec(obs_dim), jax.random.PRNGKey(0))
    data = stackelberg.prepare_batch(state, jax.tree.map(jnp.asarray, batch))
    noise = jnp.zeros((3, n, 1))
    # a policy that takes action 0, the data's, everywhere: logits from a zero kernel and a large bias
    data_policy = jax.tree.map(jnp.zeros_like, state.policy.params)
    data_policy["params"]["Dense_0"]["bias"] = jnp.array([30.0, -30.0])
    phi = state.q.params
    shifted = jax.tree.map(lambda x: x, phi)  # new containers: setting a leaf below leaves phi as it is
    shifted["params"]["Dense_1"]["bias"] = phi["params"]["Dense_1"]["bias"] + 5.0

    def terms(theta, p):
        return stackelberg.game_terms(state, theta, p, data, noise, "u")

    for p in (phi, shifted):
        assert abs(float(jnp.mean(terms(data_policy, p)["leader_values"]))) < 1e-5
    # the follower's objective is the leader's plus lambda L_K (the same value term in both players)
    f2, f2_terms = stackelberg.follower(state, data, noise)(state.policy.params, phi)
    f1 = float(stackelberg.leader(state, data, noise)(state.policy.params, phi))
    np.testing.assert_allclose(float(f2 - config.kernel_weight * f2_terms["kernel_loss"]), f1, rtol=1e-4)
    assert abs(float(jnp.mean(f2_terms["initial_values"])) - f1) > 1e-2  # the absolute term would differ
    theta = state.policy.params
    relative = [float(jnp.mean(terms(theta, p)["pessimism_values"])) for p in (phi, shifted)]
    absolute = [float(jnp.mean(terms(theta, p)["initial_values"])) for p in (phi, shifted)]
    assert abs(relative[1] - relative[0]) < 1e-5 and abs(relative[0]) > 1e-3, relative
    np.testing.assert_allclose(absolute[1] - absolute[0], 5.0, rtol=1e-5)


def test_relative_pessimism_needs_dataset_states_and_the_warmup_a_count():
    with pytest.raises(DrorlError, match="leader_states=dataset"):
        stackelberg.init(stackelberg.Config(pessimism="relative"), tabular_spec(3), jax.random.PRNGKey(0))
    with pytest.raises(DrorlError, match="leader_warmup=-1"):
        stackelberg.init(stackelberg.Config(leader_warmup=-1), tabular_spec(3), jax.random.PRNGKey(0))


def test_leader_warmup_uses_the_partial_gradient_then_the_total_derivative():
    """During ``leader_warmup`` updates the leader's step is the simultaneous ablation's; from then on it is
    the full total derivative, identical to a run without warm-up at that step."""
    rng = np.random.default_rng(2)
    n, obs_dim = 16, 3
    batch = {"observations": rng.normal(size=(n, obs_dim)), "actions": rng.integers(2, size=(n, 1)).astype(float),
             "rewards": rng.normal(size=n), "next_observations": rng.normal(size=(n, obs_dim)),
             "terminals": np.zeros(n), "initial_observations": rng.normal(size=(n, obs_dim))}
    config = stackelberg.Config(policy_hidden_dims=(4,), q_hidden_dims=(4,), batch_size=n, leader_warmup=5)
    state = stackelberg.init(config, tabular_spec(obs_dim), jax.random.PRNGKey(0))
    data = stackelberg.prepare_batch(state, jax.tree.map(jnp.asarray, jax.tree.map(np.float32, batch)))
    noise = jnp.zeros((3, n, 1))
    gradient = jax.jit(lambda st: stackelberg.leader_gradient(st, st.q.params, data, noise))
    flat = lambda g: np.asarray(ravel_pytree(g)[0])  # noqa: E731

    def with_config(step, **changes):
        return state.replace(config=dataclasses.replace(config, **changes), step=jnp.asarray(step, jnp.int32))

    partial = flat(jax.grad(stackelberg.leader(state, data, noise))(state.policy.params, state.q.params))
    total = flat(gradient(with_config(5, leader_warmup=0))[0])
    assert np.linalg.norm(total - partial) > 0.1 * np.linalg.norm(total)  # the term matters here
    np.testing.assert_allclose(flat(gradient(with_config(4))[0]), partial, rtol=1e-6)
    np.testing.assert_allclose(flat(gradient(with_config(5))[0]), total, rtol=1e-6)
