"""Dynamics perturbations: each family writes the right model field, and nominal values always come back."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

from drorl.envs import FAMILIES, Perturbation, default_grid, get_task, make_env, parse_families
from drorl.envs.perturbations import MODEL_FIELDS, model_field
from drorl.errors import DrorlError

evaluation = importlib.import_module("drorl.evaluate")  # the module (drorl.evaluate is the command)

# The model fields each family may change on hopper (action noise touches none).
CHANGED_FIELDS = {
    "gravity": {"opt.gravity"},
    "damping": {"dof_damping"},
    "stiffness": {"jnt_stiffness", "qpos_spring"},
    "actuator_range": {"actuator_ctrlrange"},
    "frictionloss": {"dof_frictionloss"},
    "mass": {"body_mass"},
    "friction": {"geom_friction"},
    "action_noise": set(),
}


def model_fields(env) -> dict[str, np.ndarray]:
    model = env.unwrapped.model
    return {field: model_field(model, field).copy() for field in MODEL_FIELDS}


def assert_nominal(env, reference: dict[str, np.ndarray]) -> None:
    for field, value in model_fields(env).items():
        np.testing.assert_array_equal(value, reference[field], err_msg=field)


def zero_policy(act_dim: int):
    return lambda obs: np.zeros(obs.shape[:2] + (act_dim,), np.float32)


@pytest.fixture(scope="module")
def fresh_fields():
    """Model fields of a never-perturbed env per task."""
    result = {}
    for task in ("hopper", "ant"):
        env = make_env(task)
        result[task] = model_fields(env)
        env.close()
    return result


@pytest.mark.parametrize("task,family", [("hopper", f) for f in FAMILIES] + [("ant", "damping")])
def test_sweep_restores_every_field(monkeypatch, fresh_fields, task, family):
    created = []

    def recording_make_env(*args, **kwargs):
        created.append(make_env(*args, **kwargs))
        return created[-1]

    monkeypatch.setattr(evaluation, "make_env", recording_make_env)
    result = evaluation.evaluate_sweeps(
        zero_policy(get_task(task).act_dim), 1, task, [family], episodes=1, progress=False, max_steps=3
    )
    assert [point["value"] for point in result["sweeps"][family]] == default_grid(task, family)
    assert created
    for env in created:
        assert_nominal(env, fresh_fields[task])
        assert_nominal(env, dict(env.nominal))


@pytest.mark.parametrize("family", FAMILIES)
def test_family_changes_only_its_fields(fresh_fields, family):
    env = make_env("hopper")
    value = default_grid("hopper", family)[1]
    env.set_perturbation(Perturbation(family, value))
    env.reset(seed=0)
    changed = {f for f, v in model_fields(env).items() if not np.array_equal(v, fresh_fields["hopper"][f])}
    assert changed == CHANGED_FIELDS[family]
    env.close()
    assert_nominal(env, fresh_fields["hopper"])


def test_ant_damping_and_stiffness_index_dofs_and_joints():
    env = make_env("ant", Perturbation("damping", 0.4))
    model = env.unwrapped.model
    np.testing.assert_array_equal(model.dof_damping[:6], 0.0)  # the free root joint's 6 DOFs
    np.testing.assert_allclose(model.dof_damping[6:14], 1.4)
    env.set_perturbation(Perturbation("stiffness", 25.0))
    np.testing.assert_array_equal(model.jnt_stiffness, [0.0] + [25.0] * 8)
    np.testing.assert_array_equal(model.dof_damping[6:14], 1.0)
    env.close()


def test_hopper_stiffness_sets_thigh_and_spring_reference():
    env = make_env("hopper", Perturbation("stiffness", 30.0))
    model = env.unwrapped.model
    np.testing.assert_array_equal(model.jnt_stiffness, [0, 0, 0, 30, 0, 0])
    np.testing.assert_array_equal(model.qpos_spring, [0, 0, 0, 0.2, 0, 0])
    env.close()


def test_halfcheetah_stiffness_scales_back_joints():
    env = make_env("halfcheetah", Perturbation("stiffness", 0.5))
    np.testing.assert_allclose(env.unwrapped.model.jnt_stiffness[3:], [360, 270, 180, 180, 120, 60])
    env.close()


def test_perturbation_persists_and_is_reapplied_on_reset():
    env = make_env("hopper", Perturbation("gravity", 0.1))
    model = env.unwrapped.model
    expected = -9.81 * 1.1
    for seed in range(3):
        env.reset(seed=seed)
        assert model.opt.gravity[2] == pytest.approx(expected)
        env.step(np.zeros(3, np.float32))
    model.opt.gravity[2] = -1.0  # a stray write is undone by the next reset
    env.reset()
    assert model.opt.gravity[2] == pytest.approx(expected)
    env.set_perturbation(None)
    env.reset(seed=0)
    assert model.opt.gravity[2] == pytest.approx(-9.81)
    env.close()


def test_gravity_changes_the_dynamics():
    heights = []
    for perturbation in (None, Perturbation("gravity", 0.2)):
        env = make_env("hopper", perturbation)
        env.reset(seed=0)
        for _ in range(10):
            env.step(np.zeros(3, np.float32))
        heights.append(env.unwrapped.data.qpos[1])
        env.close()
    assert heights[1] < heights[0]


def test_actuator_range_clamps_the_applied_force():
    # Hopper's motors have gain 1: actuator_force is the clamped control, the joint torque is gear times it.
    env = make_env("hopper", Perturbation("actuator_range", 0.5))
    gear = env.unwrapped.model.actuator_gear[:, 0]
    data = env.unwrapped.data
    env.reset(seed=0)
    env.step(np.ones(3, np.float32))
    np.testing.assert_allclose(data.actuator_force, 0.5)
    np.testing.assert_allclose(data.qfrc_actuator[3:6], 0.5 * gear)
    np.testing.assert_array_equal(env.action_space.high, 1.0)
    env.set_perturbation(None)
    env.reset(seed=0)
    env.step(np.ones(3, np.float32))
    np.testing.assert_allclose(data.actuator_force, 1.0)
    env.close()


def test_action_noise_is_seeded_and_clipped():
    def rollout(seed: int) -> np.ndarray:
        env = make_env("hopper", Perturbation("action_noise", 0.2))
        env.reset(seed=seed)
        controls = []
        for _ in range(5):
            env.step(np.full(3, 0.9, np.float32))
            controls.append(env.unwrapped.data.ctrl.copy())
        env.close()
        return np.array(controls)

    first, again, other = rollout(0), rollout(0), rollout(1)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.all(np.abs(first) <= 1.0) and not np.allclose(first, 0.9)


def test_unknown_family_and_bad_values():
    with pytest.raises(DrorlError, match=r"'wind'.*gravity, damping"):
        Perturbation("wind", 0.1)
    with pytest.raises(DrorlError, match="'wind'"):
        parse_families("gravity, wind")
    with pytest.raises(DrorlError, match="no perturbation family"):
        parse_families(" , ")
    with pytest.raises(DrorlError, match="actuator_range"):
        Perturbation("actuator_range", 0.0)
    with pytest.raises(DrorlError, match="absolute"):
        make_env("hopper", Perturbation("stiffness", -0.5))
    assert parse_families("gravity, damping,gravity") == ["gravity", "damping"]
    assert Perturbation("gravity", 1).label == "gravity=1"


def test_default_grids():
    assert default_grid("hopper", "gravity") == [0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2]
    assert default_grid("Hopper-v5", "stiffness") == [float(x) for x in range(0, 130, 10)]
    assert default_grid("halfcheetah", "actuator_range")[0] == 0.6
    assert len(default_grid("ant", "actuator_range")) == 11
    for task in ("hopper", "halfcheetah", "walker2d", "ant", "inverted-pendulum"):
        for family in FAMILIES:
            for value in default_grid(task, family):
                Perturbation(family, value)  # every default value is valid
    with pytest.raises(DrorlError, match="unknown perturbation family"):
        default_grid("hopper", "wind")


def test_make_env_is_quiet(capfd):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_env("halfcheetah").close()
    assert not [w for w in caught if "MuJoCo" in str(w.message)]
    assert "settotalmass" not in capfd.readouterr().err


def test_task_lookup():
    assert get_task("Hopper-v5") is get_task("hopper")
    assert get_task("inverted-pendulum").d4rl_ref_min is None
    with pytest.raises(DrorlError, match=r"unknown task 'x'; expected one of hopper, halfcheetah"):
        get_task("x")
