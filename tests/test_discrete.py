"""CartPole and DQN: the discrete-action path (actions are one float column holding the index)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drorl.algos import dqn
from drorl.algos.base import Spec
from drorl.data.generate import generate
from drorl.envs import Perturbation, action_bounds, make_env
from drorl.errors import DrorlError
from drorl.evaluate import evaluate_sweeps


def test_double_q_target_by_hand():
    next_online = jnp.array([[1.0, 3.0], [5.0, 2.0]])
    next_target = jnp.array([[10.0, 20.0], [30.0, 40.0]])
    y = dqn.double_q_target(jnp.array([1.0, 2.0]), jnp.array([0.0, 1.0]), 0.5, next_online, next_target)
    np.testing.assert_allclose(y, [1.0 + 0.5 * 20.0, 2.0])  # online argmax 1 -> target 20; terminal -> r


def test_dqn_fits_a_bandit():
    """gamma = 0: Q(s, a) converges to the reward of each action; the greedy action is the best one."""
    spec = Spec(2, 1, np.zeros(1, np.float32), np.ones(1, np.float32), np.zeros(2, np.float32),
                np.ones(2, np.float32), num_actions=2)
    config = dqn.Config(hidden_dims=(16,), gamma=0.0, lr=1e-2)
    state = dqn.init(config, spec, jax.random.PRNGKey(0))
    actions = jnp.array([[0.0], [1.0]] * 8)
    batch = {"observations": jnp.ones((16, 2)), "actions": actions, "rewards": jnp.where(actions[:, 0] > 0, 1.0, -1.0),
             "next_observations": jnp.ones((16, 2)), "terminals": jnp.zeros(16)}
    step = jax.jit(dqn.update)
    for i in range(300):
        state, _ = step(state, batch, jax.random.PRNGKey(i))
    q = dqn.q_network(config, 2).apply(state.q.params, jnp.ones((1, 2)))[0]
    np.testing.assert_allclose(q, [-1.0, 1.0], atol=0.05)
    assert float(dqn.act(state, jnp.ones((1, 2)), jax.random.PRNGKey(0))[0, 0]) == 1.0


def test_cartpole_perturbations_apply_and_restore():
    env = make_env("cartpole", Perturbation("gravity", 1.0))
    env.reset(seed=0)
    assert env.unwrapped.gravity == pytest.approx(2 * 9.8)
    env.set_perturbation(Perturbation("mass", 1.0))
    env.reset(seed=0)
    assert env.unwrapped.gravity == pytest.approx(9.8) and env.unwrapped.masspole == pytest.approx(0.2)
    assert env.unwrapped.polemass_length == pytest.approx(0.2 * env.unwrapped.length)
    env.set_perturbation(Perturbation("actuator_range", 3.0))
    env.step(np.array([1.0], np.float32))
    assert env.unwrapped.force_mag == 3.0
    env.close()
    assert env.unwrapped.force_mag == 10.0 and env.unwrapped.masspole == pytest.approx(0.1)
    with pytest.raises(DrorlError, match="does not apply to cartpole"):
        make_env("cartpole", Perturbation("damping", 0.1))


def test_cartpole_random_dataset_and_sweep():
    low, high = action_bounds("cartpole")
    assert low.tolist() == [0.0] and high.tolist() == [1.0]
    ds = generate("cartpole", "random", transitions=500, seed=0, progress=False)
    assert set(np.unique(ds.actions)) <= {0.0, 1.0} and ds.act_dim == 1 and ds.terminals.any()
    result = evaluate_sweeps(lambda obs: np.zeros(obs.shape[:2] + (1,), np.float32), 1, "cartpole", "gravity",
                             episodes=2, ref_min=0.0, ref_max=500.0, progress=False)
    assert len(result["sweeps"]["gravity"]) == 9
