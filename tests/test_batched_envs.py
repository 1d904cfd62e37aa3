"""Batched MuJoCo physics: the same resets, observations, rewards and flags as stepping Gymnasium envs."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from drorl.envs import FAMILIES, Perturbation, default_grid, get_task, make_env
from drorl.envs.batched import BATCHED_TASKS, BatchedMujocoEnvs
from drorl.envs.scripted import lqr_controller
from drorl.errors import DrorlError
from drorl.evaluate import run_episodes

evaluation = importlib.import_module("drorl.evaluate")  # the module (drorl.evaluate is the command)

MUJOCO_TASKS = ["hopper", "halfcheetah", "walker2d", "ant", "inverted-pendulum"]


def strong_perturbations(task: str) -> list[Perturbation | None]:
    """Nominal plus one far-from-nominal grid value of every family (actuator range: its narrowest)."""
    points = [Perturbation(f, default_grid(task, f)[0 if f == "actuator_range" else -1]) for f in FAMILIES]
    return [None, *points]


def batched_copy(task: str, perturbations: list[Perturbation | None]) -> BatchedMujocoEnvs:
    with make_env(task) as template:
        envs = BatchedMujocoEnvs(template, len(perturbations))
    envs.set_perturbations(perturbations)
    return envs


def test_batched_tasks_are_the_mujoco_tasks():
    assert BATCHED_TASKS == set(MUJOCO_TASKS)


@pytest.mark.parametrize("task", MUJOCO_TASKS)
def test_steps_match_gymnasium(task):
    """Random actions for 120 steps; an env that finishes is reset with a fresh seed in both backends."""
    perturbations = strong_perturbations(task)
    gym_envs = [make_env(task, p) for p in perturbations]
    batched = batched_copy(task, perturbations)
    low, high = gym_envs[0].action_space.low, gym_envs[0].action_space.high
    rng = np.random.default_rng(0)
    seeds = iter(range(100, 10_000))
    all_ids = np.arange(len(perturbations))
    first_seeds = [next(seeds) for _ in all_ids]
    expected_obs = np.array([env.reset(seed=s)[0] for env, s in zip(gym_envs, first_seeds)])
    np.testing.assert_array_equal(batched.reset(all_ids, first_seeds), expected_obs)
    resets = 0
    for _ in range(120):
        actions = rng.uniform(low, high, (len(perturbations), len(low))).astype(np.float32)
        obs, rewards, terminated, truncated = batched.step(all_ids, actions)
        for i, env in enumerate(gym_envs):
            expected = env.step(actions[i])
            np.testing.assert_array_equal(obs[i], expected[0])
            assert rewards[i] == expected[1]
            assert (terminated[i], truncated[i]) == (expected[2], expected[3])
        finished = np.flatnonzero(terminated | truncated)
        if finished.size:
            new_seeds = [next(seeds) for _ in finished]
            expected_obs = np.array([gym_envs[i].reset(seed=s)[0] for i, s in zip(finished, new_seeds)])
            np.testing.assert_array_equal(batched.reset(finished, new_seeds), expected_obs)
            resets += finished.size
    for env in gym_envs:
        env.close()
    assert resets > 0 or task == "halfcheetah"  # the resets were exercised (halfcheetah never terminates)


def test_stepping_a_subset_leaves_the_other_envs_alone():
    batched = batched_copy("hopper", [None, None, None])
    start = batched.reset([0, 1, 2], [5, 5, 5])
    actions = np.full((2, 3), 0.5, np.float32)
    moved = batched.step([0, 2], actions)[0]
    np.testing.assert_array_equal(moved[0], moved[1])
    again = batched.step([1], actions[:1])[0]  # env 1 starts its first step from the reset state
    np.testing.assert_array_equal(again[0], moved[0])
    assert not np.array_equal(moved[0], start[0])


def test_time_limit_truncates_like_gymnasium():
    lqr = lqr_controller("inverted-pendulum")
    batched = batched_copy("inverted-pendulum", [None])
    env = make_env("inverted-pendulum")
    obs = batched.reset([0], [3])
    np.testing.assert_array_equal(obs[0], env.reset(seed=3)[0])
    for step in range(1, 1001):
        action = np.asarray(lqr(obs.astype(np.float32)), np.float32)
        obs, reward, terminated, truncated = batched.step([0], action)
        expected = env.step(action[0])
        assert (reward[0], terminated[0], truncated[0]) == tuple(expected[1:4])
        assert truncated[0] == (step == 1000)
    env.close()


def hopper_policy_pair(obs: np.ndarray) -> np.ndarray:
    """Two deterministic elementwise hopper policies, one per policy row."""
    action = np.tanh(obs[..., 1:4] * 2.0)
    return np.stack([action[0], -action[1]])


@pytest.mark.parametrize("task,num_policies,max_steps", [("hopper", 2, 150), ("inverted-pendulum", 1, None)])
def test_run_episodes_equals_the_gymnasium_path(monkeypatch, task, num_policies, max_steps):
    policy = hopper_policy_pair if task == "hopper" else lqr_controller(task)
    # 3 perturbations x 1 episode in chunks of 2: the last chunk leaves a slot idle.
    perturbations = [None, Perturbation("gravity", default_grid(task, "gravity")[-1]), Perturbation("action_noise", 0.1)]
    built = []

    def counting_make_env(*args, **kwargs):
        built.append(make_env(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(evaluation, "make_env", counting_make_env)
    batched = run_episodes(policy, num_policies, task, perturbations, 1, seed=2, max_steps=max_steps,
                           max_envs=2 * num_policies)
    assert len(built) == 1  # one template env; the physics ran batched
    monkeypatch.setattr(evaluation, "BATCHED_TASKS", frozenset())
    gymnasium = run_episodes(policy, num_policies, task, perturbations, 1, seed=2, max_steps=max_steps,
                             max_envs=2 * num_policies)
    assert len(built) == 1 + 2 * num_policies
    np.testing.assert_array_equal(batched, gymnasium)


def test_every_finished_episode_advances_the_progress_once():
    advanced = []
    envs = batched_copy("hopper", [None] * 4)
    starts = [(None, 1), (Perturbation("gravity", 0.2), 2), (None, 3)]  # slot 3 of the width 4 stays idle
    returns = evaluation._run_batched_chunk(
        lambda obs: np.ones(obs.shape[:2] + (3,), np.float32), envs, 1, get_task("hopper"), starts, 300, advanced.append)
    assert returns.shape == (1, 3) and sum(advanced) == 3


def test_bad_input_is_a_one_line_error():
    with pytest.raises(DrorlError, match="needs a MuJoCo task env"):
        BatchedMujocoEnvs(make_env("cartpole"), 2)
    with make_env("hopper") as template:
        with pytest.raises(DrorlError, match="at least one env"):
            BatchedMujocoEnvs(template, 0)
        envs = BatchedMujocoEnvs(template, 2)
    with pytest.raises(DrorlError, match="one perturbation per env slot"):
        envs.set_perturbations([None])
    with pytest.raises(DrorlError, match="absolute"):
        envs.set_perturbations([None, Perturbation("stiffness", -0.5)])
    with pytest.raises(DrorlError, match="sorted, unique"):
        envs.reset([1, 0], [0, 0])
    with pytest.raises(DrorlError, match="one reset seed per env"):
        envs.reset([0, 1], [0])
    envs.reset([0, 1], [0, 1])
    with pytest.raises(DrorlError, match=r"actions must have shape \(2, 3\)"):
        envs.step([0, 1], np.zeros((2, 2), np.float32))
