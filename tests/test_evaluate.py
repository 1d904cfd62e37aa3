"""Batched evaluation: determinism, agreement with the one-env loop, scores and the eval.json layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drorl.envs import Perturbation
from drorl.envs.scripted import lqr_controller
from drorl.errors import DrorlError
from drorl.evaluate import (
    evaluate_sweeps,
    normalized_score,
    robustness_summary,
    run_episodes,
    run_episodes_one_env,
    write_eval_json,
)


def hopper_policy(obs: np.ndarray) -> np.ndarray:
    """A deterministic elementwise policy (no reductions), so batched and single calls agree bit for bit."""
    return np.tanh(obs[..., 1:4] * 2.0)


def two_hopper_policies(obs: np.ndarray) -> np.ndarray:
    return np.stack([hopper_policy(obs[0]), -hopper_policy(obs[1])])


@pytest.fixture(scope="module")
def lqr():
    return lqr_controller("inverted-pendulum")


PERTURBATIONS = [None, Perturbation("gravity", 0.1), Perturbation("action_noise", 0.1)]


def test_run_episodes_is_deterministic():
    first = run_episodes(two_hopper_policies, 2, "hopper", PERTURBATIONS, 2, seed=3, max_steps=60)
    again = run_episodes(two_hopper_policies, 2, "hopper", PERTURBATIONS, 2, seed=3, max_steps=60)
    other = run_episodes(two_hopper_policies, 2, "hopper", PERTURBATIONS, 2, seed=4, max_steps=60)
    assert first.shape == (2, 3, 2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_every_policy_starts_from_the_same_states():
    first_obs = []

    def recording_policy(obs):
        if not first_obs:
            first_obs.append(obs.copy())
        return np.zeros(obs.shape[:2] + (3,), np.float32)

    run_episodes(recording_policy, 3, "hopper", PERTURBATIONS, 2, max_steps=2)
    obs = first_obs[0]
    assert obs.shape == (3, 6, 11)
    np.testing.assert_array_equal(obs[0], obs[1])
    np.testing.assert_array_equal(obs[0], obs[2])
    assert not np.array_equal(obs[0, 0], obs[0, 1])  # episodes differ


def test_batched_equals_one_env_loop():
    # max_envs=4 forces chunks of 2 envs per policy through a reused env pool.
    batched = run_episodes(two_hopper_policies, 2, "hopper", PERTURBATIONS, 2, seed=7, max_steps=200, max_envs=4)
    for p, perturbation in enumerate(PERTURBATIONS):
        for s, sign in enumerate((1.0, -1.0)):
            single = run_episodes_one_env(
                lambda o, sign=sign: sign * hopper_policy(o), "hopper", perturbation, 2, seed=7, max_steps=200
            )
            np.testing.assert_allclose(batched[s, p], single, rtol=0, atol=1e-6)


def test_finished_envs_stop_and_keep_their_last_observation():
    batches = []

    def falling_policy(obs):
        batches.append(obs.copy())
        return np.ones(obs.shape[:2] + (3,), np.float32)

    returns = run_episodes(falling_policy, 1, "hopper", [None], 2, max_steps=400)
    assert all(batch.shape == (1, 2, 11) for batch in batches)
    assert len(batches) < 400  # the hopper falls and terminates early
    assert np.isfinite(returns).all()


def test_normalized_score():
    assert normalized_score(50.0, 0.0, 200.0) == pytest.approx(25.0)
    assert normalized_score(-20.272305, -20.272305, 3234.3) == pytest.approx(0.0)
    np.testing.assert_allclose(normalized_score(np.array([0.0, 100.0]), 0.0, 100.0), [0.0, 100.0])


def test_robustness_summary():
    assert robustness_summary([0.0, 0.1, 0.2], [100.0, 80.0, 30.0]) == {"auc": pytest.approx(70.0), "worst": 30.0}
    with pytest.raises(ValueError):
        robustness_summary([0.0, 0.1], [1.0])


def test_lqr_controller_balances_and_clips(lqr):
    returns = run_episodes(lqr, 1, "inverted-pendulum", [None], 3)
    assert returns.min() >= 990
    assert lqr(np.array([[10.0, 10.0, 10.0, 10.0]])).tolist() == [[3.0]]
    assert lqr(np.array([[-10.0, -10.0, -10.0, -10.0]])).tolist() == [[-3.0]]
    assert lqr(np.zeros((2, 5, 4))).shape == (2, 5, 1)
    with pytest.raises(DrorlError, match="no LQR expert"):
        lqr_controller("hopper")


def test_eval_json_layout(lqr, tmp_path):
    result = evaluate_sweeps(
        lqr, 2, "inverted-pendulum", "gravity,damping", episodes=2, ref_min=0.0, ref_max=1000.0,
        grids={"gravity": [0.0, 3.5], "damping": [0.0]}, progress=False, reference_source="dataset",
    )
    assert list(result) == ["env", "episodes", "reference", "nominal", "sweeps", "summary"]
    assert result["env"] == "inverted-pendulum" and result["episodes"] == 2
    assert result["reference"] == {"min": 0.0, "max": 1000.0, "source": "dataset"}
    point_keys = ["return_mean", "return_std", "normalized_mean", "per_seed"]
    assert list(result["nominal"]) == point_keys
    assert result["nominal"]["normalized_mean"] == pytest.approx(100.0)
    assert len(result["nominal"]["per_seed"]) == 2
    gravity = result["sweeps"]["gravity"]
    assert [point["value"] for point in gravity] == [0.0, 3.5]
    assert all(list(point) == ["value", *point_keys] for point in gravity)
    assert gravity[1]["return_mean"] < 500  # 4.5 x gravity defeats the LQR expert
    summary = result["summary"]["gravity"]
    assert summary["worst"] == gravity[1]["normalized_mean"]
    assert summary["auc"] == pytest.approx((gravity[0]["normalized_mean"] + gravity[1]["normalized_mean"]) / 2)
    path = tmp_path / "run" / "eval.json"
    write_eval_json(path, result)
    assert json.loads(path.read_text()) == result


def test_references():
    zero = lambda obs: np.zeros(obs.shape[:2] + (3,), np.float32)  # noqa: E731
    result = evaluate_sweeps(zero, 1, "hopper", [], episodes=1, progress=False, max_steps=2)
    assert result["reference"] == {"min": -20.272305, "max": 3234.3, "source": "d4rl"}
    assert result["sweeps"] == {} and result["summary"] == {}
    with pytest.raises(DrorlError, match="no D4RL reference"):
        evaluate_sweeps(zero, 1, "inverted-pendulum", [], episodes=1, progress=False)
    with pytest.raises(DrorlError, match="ref_min < ref_max"):
        evaluate_sweeps(zero, 1, "hopper", [], episodes=1, ref_min=5.0, ref_max=5.0, progress=False)
