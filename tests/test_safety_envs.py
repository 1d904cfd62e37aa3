"""The safety tasks of DSRL (issue 19, check 4 and the high-order CBF part of check 1)."""

import warnings

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils import seeding
from gymnasium.utils.env_checker import check_env

from drorl.envs import get_task, make_env
from drorl.envs import safety
from drorl.errors import DrorlError
from drorl.robust.cbf_qp import cbf_qp, first_order_cbf_rows, high_order_cbf_rows

NAMES = list(safety.TASKS)
observe = jax.jit(safety.observe, static_argnums=0)


def reset(task, key, disturbance):
    """The wrappers' compiled reset (shared with them: op-by-op dispatch is slow, compiling too)."""
    return safety.compiled(task, disturbance)[0](key)


def step(task, env_state, action):
    return safety.compiled(task)[1](env_state, action)


@pytest.mark.parametrize("name", NAMES)
def test_gymnasium_checker_and_task_table(name):
    task = safety.TASKS[name]
    env = gymnasium.make(f"drorl.envs.safety:{task.gym_id}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker's advice on infinite bounds and unnormalised boxes
        check_env(env.unwrapped, skip_render_check=True)
    info = get_task(f"safe-{name}")
    assert (info.gym_id, info.obs_dim, info.act_dim, info.max_episode_steps) == (
        task.gym_id, task.obs_dim, task.act_dim, task.max_steps)
    assert make_env(info).action_space.shape == (task.act_dim,)


@pytest.mark.parametrize("name,disturbance", [("unicycle", safety.Disturbance("shift", 0.3)),
                                              ("double-integrator", safety.Disturbance("heavy_tail", 2.0)),
                                              ("quadcopter", safety.NOMINAL)])
def test_the_jax_step_matches_the_wrapper_step_for_step(name, disturbance):
    """A compiled, vmapped rollout (scan) gives the wrapper's observations, rewards, costs and ends."""
    task = safety.TASKS[name]
    seeds, horizon = [3, 4], 30
    actions = np.random.default_rng(0).uniform(task.action_low, task.action_high,
                                               (len(seeds), horizon, task.act_dim)).astype(np.float32)
    keys = jnp.stack([safety.reset_key(seeding.np_random(s)[0]) for s in seeds])

    def rollout(key, acts):
        env_state, obs = safety.reset(task, key, disturbance)
        return obs, jax.lax.scan(lambda st, a: safety.step(task, st, a), env_state, acts)[1]

    first_obs, outs = jax.jit(jax.vmap(rollout))(keys, jnp.asarray(actions))
    env = make_env(f"safe-{name}", disturbance)
    for i, seed in enumerate(seeds):
        obs, _ = env.reset(seed=seed)
        np.testing.assert_array_equal(obs, first_obs[i])
        for t in range(horizon):
            obs, reward, terminated, truncated, info = env.step(actions[i, t])
            np.testing.assert_allclose(obs, outs.obs[i, t], rtol=1e-6, atol=1e-6)
            assert reward == pytest.approx(float(outs.reward[i, t]), abs=1e-5)
            assert info["cost"] == float(outs.cost[i, t])
            assert (terminated, truncated) == (bool(outs.terminated[i, t]), bool(outs.truncated[i, t]))
            if terminated or truncated:
                break


def test_episode_ends_reward_and_cost():
    """Driving straight into an obstacle costs 1 per step inside; reaching the goal pays the bonus and
    terminates; the clock truncates at max_steps."""
    task = safety.TASKS["double-integrator"]
    env_state, _ = reset(task, jax.random.PRNGKey(0), safety.NOMINAL)
    p = env_state.state[:2]
    inside = env_state.replace(centres=env_state.centres.at[0].set(p), radii=env_state.radii.at[0].set(0.5))
    _, out = step(task, inside, jnp.zeros(2))
    assert float(out.cost) == 1.0 and not bool(out.terminated)
    at_goal = env_state.replace(state=env_state.state.at[:2].set(env_state.goal - 0.05))
    _, out = step(task, at_goal, jnp.zeros(2))
    assert bool(out.terminated) and float(out.reward) > task.goal_bonus - 1.0
    late = env_state.replace(steps=jnp.asarray(task.max_steps - 1))
    assert bool(step(task, late, jnp.zeros(2))[1].truncated)


def test_disturbance_families():
    """The shift has the stated norm; nominal noise has the task's std; the heavy tail has large outliers."""
    task = safety.TASKS["quadcopter"]
    env_state, _ = reset(task, jax.random.PRNGKey(1), safety.Disturbance("shift", 0.5))
    assert float(jnp.linalg.norm(env_state.disturbance_mean)) == pytest.approx(0.5, abs=1e-6)
    draw = jax.jit(jax.vmap(safety.sample_disturbance, in_axes=(0, None, None, None)), static_argnums=1)
    keys = jax.random.split(jax.random.PRNGKey(2), 20_000)
    for mean in (jnp.zeros(3), env_state.disturbance_mean):
        xi = draw(keys, task.nominal_std, mean, jnp.asarray(0.0))
        np.testing.assert_allclose(jnp.mean(xi, 0), mean, atol=5e-3)
        np.testing.assert_allclose(jnp.std(xi, 0), task.nominal_std, rtol=0.03)
    heavy = draw(keys, task.nominal_std, jnp.zeros(3), jnp.asarray(1.5))
    assert float(jnp.max(jnp.abs(heavy))) > 20 * task.nominal_std
    with pytest.raises(DrorlError, match="unknown disturbance family"):
        safety.Disturbance("uniform")


@pytest.mark.parametrize("name", NAMES)
def test_rows_from_observations_equal_the_world_frame_rows(name):
    """cbf_rows reads the robot's frame off the observation; the rows equal those of the world frame."""
    task = safety.TASKS[name]
    env_state, _ = reset(task, jax.random.PRNGKey(5), safety.NOMINAL)
    env_state = env_state.replace(state=env_state.state + 0.3)  # moving, and turned (unicycle)
    obs = observe(task, env_state)
    xi_bar = jnp.linspace(0.1, -0.2, task.pos_dim)
    rows = safety.cbf_rows(task, obs, xi_bar)
    p = env_state.state[:task.pos_dim]
    if task.order == 1:
        theta, l = env_state.state[2], task.lookahead
        g = jnp.array([[jnp.cos(theta), -l * jnp.sin(theta)], [jnp.sin(theta), l * jnp.cos(theta)]])
        world = first_order_cbf_rows(p + l * jnp.array([jnp.cos(theta), jnp.sin(theta)]), jnp.zeros(2), g,
                                     env_state.centres, env_state.radii + task.cbf_buffer + l, xi_bar, task.cbf_alpha)
    else:
        v = env_state.state[task.pos_dim:]
        world = high_order_cbf_rows(p, v, jnp.eye(task.pos_dim), env_state.centres,
                                    env_state.radii + task.cbf_buffer, xi_bar, *task.cbf_poles,
                                    drift=safety.acceleration_drift(task, v))
    for got, want in zip(rows, world):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["double-integrator", "quadcopter"])
def test_the_high_order_layer_acts_near_an_obstacle_and_not_far(name):
    """Heading at an obstacle at speed with the action pushing on: near, the HOCBF-QP brakes (and meets
    its rows); far, it returns the action unchanged."""
    task = safety.TASKS[name]
    d = task.pos_dim
    env_state, _ = reset(task, jax.random.PRNGKey(0), safety.NOMINAL)
    centre = jnp.zeros(d).at[-1].set(1.0) if d == 3 else jnp.zeros(d)
    towards = jnp.zeros(d).at[0].set(1.0)
    hover = jnp.asarray(task.action_low) + jnp.asarray(task.action_high)
    u_rl = 0.5 * hover + 0.5 * towards  # mid-box (hovering) plus a push at the obstacle
    low, high = jnp.asarray(task.action_low), jnp.asarray(task.action_high)

    @jax.jit
    def layer(env_state):
        rows = safety.cbf_rows(task, safety.observe(task, env_state), jnp.zeros(d))
        return rows, cbf_qp(u_rl, rows.A, rows.b, low, high)

    for gap, should_change in ((0.4, True), (3.0, False)):
        state = jnp.concatenate([centre - (0.4 + gap) * towards, 0.5 * towards])
        far_away = jnp.full_like(env_state.centres, 100.0)  # only the first obstacle matters
        placed = env_state.replace(state=state, centres=far_away.at[0].set(centre),
                                   radii=env_state.radii.at[0].set(0.4))
        rows, u = layer(placed)
        if should_change:
            assert float(u[0]) < float(u_rl[0]) - 0.3
            assert float(jnp.min(rows.A @ u - rows.b)) > -1e-2
        else:
            np.testing.assert_allclose(u, u_rl, atol=1e-5)
