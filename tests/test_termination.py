"""Termination rules: the observation-only rule agrees with Gymnasium's envs, and jitted JAX with numpy."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drorl.envs import get_task, make_env
from drorl.envs.termination import terminated
from drorl.errors import DrorlError

TASKS = ("hopper", "walker2d", "ant", "halfcheetah", "inverted-pendulum", "cartpole")
NEVER_TERMINATES = {"halfcheetah"}
STEPS = 300  # per task, over as many seeded episodes as that takes
MAX_EPISODE_STEPS = 150  # cut halfcheetah's (never terminating) episodes short, so it still sees several


@functools.lru_cache(maxsize=None)
def random_rollout(task: str) -> tuple[np.ndarray, np.ndarray]:
    """``STEPS`` next observations and the env's ``terminated`` flags under uniform random actions."""
    info, env = get_task(task), make_env(task)
    rng = np.random.default_rng(0)
    next_obs, flags, seed = [], [], 0
    while len(flags) < STEPS:
        env.reset(seed=seed)
        seed += 1
        for _ in range(MAX_EPISODE_STEPS):
            if info.discrete:
                action = rng.integers(info.num_actions, size=1).astype(np.float32)
            else:
                action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
            obs, _, done, truncated, _ = env.step(action)
            next_obs.append(obs)
            flags.append(done)
            if done or truncated:
                break
    env.close()
    return np.stack(next_obs[:STEPS]), np.array(flags[:STEPS])


@pytest.mark.parametrize("task", TASKS)
def test_numpy_rule_matches_gymnasium_terminated(task):
    next_obs, flags = random_rollout(task)
    np.testing.assert_array_equal(terminated(task, next_obs, np), flags)
    if task not in NEVER_TERMINATES:
        assert flags.any(), f"{task}: no termination in {len(flags)} random steps"


@pytest.mark.parametrize("task", TASKS)
def test_jitted_jax_rule_matches_numpy(task):
    next_obs, _ = random_rollout(task)
    # float32 (JAX's default precision) for both, so they compare the same numbers; a NaN and an
    # infinite row exercise the finiteness checks, and two leading axes the batch shape
    extra = np.stack([np.full(next_obs.shape[1], np.nan), np.full(next_obs.shape[1], np.inf)])
    batch = np.concatenate([next_obs[:-2], extra]).astype(np.float32).reshape(2, -1, next_obs.shape[1])
    rule = jax.jit(functools.partial(terminated, task, xp=jnp))
    result = rule(batch)
    assert result.dtype == jnp.bool_ and result.shape == batch.shape[:-1]
    np.testing.assert_array_equal(np.asarray(result), terminated(task, batch, np))


@pytest.mark.parametrize("task, z_index, boundaries", [
    ("hopper", 1, (0.7,)),
    ("walker2d", 1, (0.8, 2.0)),
    ("ant", 2, (0.2, 1.0)),
])
def test_height_boundaries_match_gymnasium_is_healthy(task, z_index, boundaries):
    """Random rollouts never land on a bound; here the torso height sits exactly on each one."""
    env = make_env(task)
    env.reset(seed=0)
    gym_env = env.unwrapped
    for z in boundaries:
        qpos = gym_env.init_qpos.copy()
        qpos[z_index] = z
        gym_env.set_state(qpos, gym_env.init_qvel)
        assert terminated(task, gym_env._get_obs(), np) == (not gym_env.is_healthy), f"{task} z={z}"
    env.close()


def test_unknown_task_and_wrong_width_raise_drorl_error():
    with pytest.raises(DrorlError, match="unknown task 'humanoid'"):
        terminated("humanoid", np.zeros((3, 11)))
    with pytest.raises(DrorlError, match=r"hopper termination: observations must have shape \(\.\.\., 11\)"):
        terminated("hopper", np.zeros((3, 17)))
