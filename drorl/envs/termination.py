"""Each task's termination (health) rule as a function of the next observation, on numpy or jax.numpy.

Gymnasium decides ``terminated`` inside its envs, from the simulator state. Model rollouts
(model-based offline RL, where a learned model predicts the next observation) and barrier functions
need the same decision from an observation, inside compiled JAX programs. ``terminated`` is that
rule, written once against an array module ``xp`` (``numpy`` or ``jax.numpy``), with Gymnasium's
defaults, which are what ``drorl.envs.make_env`` builds. Under those defaults the observation leaves
out the x position (hopper, walker2d, halfcheetah) or the x and y positions (ant), so:

================= ===================================================================================
hopper            healthy iff ``0.7 < obs[0]`` (torso z), ``-0.2 < obs[1] < 0.2`` (torso angle) and
                  ``-100 < obs[1:] < 100``
walker2d          healthy iff ``0.8 < obs[0] < 2`` (torso z) and ``-1 < obs[1] < 1`` (torso angle)
ant               healthy iff ``0.2 <= obs[0] <= 1`` (torso z) and ``obs[:27]`` (qpos[2:], qvel) is finite
halfcheetah       never terminates
inverted-pendulum terminates iff ``abs(obs[1]) > 0.2`` (pole angle) or some entry is not finite
cartpole          terminates iff ``abs(obs[0]) > 2.4`` (cart position) or ``abs(obs[2]) > 12 degrees``
                  (pole angle)
================= ===================================================================================

Where Gymnasium's documentation and code differ, the code wins: it calls every range closed, but
hopper and walker2d compare strictly, and walker2d makes no finiteness check. A NaN fails every
healthy range, so it terminates hopper, walker2d and ant, but never cartpole. Two cases where the
observation carries less than the env's state: hopper's state range also reads the unclipped joint
velocities, which its observation clips to ``[-10, 10]`` (Gymnasium terminates at a speed of 100
that no observation shows); cartpole decides on its float64 state and returns it as float32, so an
angle within float32 rounding of the threshold may disagree.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any, Callable

import numpy

from drorl.envs.tasks import TaskInfo, get_task
from drorl.errors import DrorlError

# Hopper-v5 defaults: healthy_z_range, healthy_angle_range, healthy_state_range (gymnasium/envs/mujoco/hopper_v5.py)
HOPPER_Z_RANGE = (0.7, math.inf)
HOPPER_ANGLE_RANGE = (-0.2, 0.2)
HOPPER_STATE_RANGE = (-100.0, 100.0)
# Walker2d-v5 defaults: healthy_z_range, healthy_angle_range (gymnasium/envs/mujoco/walker2d_v5.py)
WALKER2D_Z_RANGE = (0.8, 2.0)
WALKER2D_ANGLE_RANGE = (-1.0, 1.0)
# Ant-v5 default healthy_z_range (gymnasium/envs/mujoco/ant_v5.py)
ANT_Z_RANGE = (0.2, 1.0)
# Ant-v5 checks state_vector() (qpos, qvel) for finiteness: 13 positions past x, y and 14 velocities,
# before the contact forces that include_cfrc_ext_in_observation=True appends
ANT_STATE_ENTRIES = 27
# InvertedPendulum-v5's pole angle limit, fixed in its step() (gymnasium/envs/mujoco/inverted_pendulum_v5.py)
INVERTED_PENDULUM_MAX_ANGLE = 0.2
# CartPole-v1's x_threshold and theta_threshold_radians (gymnasium/envs/classic_control/cartpole.py)
CARTPOLE_MAX_POSITION = 2.4
CARTPOLE_MAX_ANGLE = 12 * 2 * math.pi / 360


def _inside(x: Any, bounds: tuple[float, float]) -> Any:
    """``low < x < high``, elementwise (False for NaN)."""
    low, high = bounds
    return (low < x) & (x < high)


def _hopper(obs: Any, xp: ModuleType) -> Any:
    healthy = (
        _inside(obs[..., 0], HOPPER_Z_RANGE)
        & _inside(obs[..., 1], HOPPER_ANGLE_RANGE)
        & xp.all(_inside(obs[..., 1:], HOPPER_STATE_RANGE), axis=-1)
    )
    return ~healthy


def _walker2d(obs: Any, xp: ModuleType) -> Any:
    return ~(_inside(obs[..., 0], WALKER2D_Z_RANGE) & _inside(obs[..., 1], WALKER2D_ANGLE_RANGE))


def _ant(obs: Any, xp: ModuleType) -> Any:
    low, high = ANT_Z_RANGE
    z = obs[..., 0]
    healthy = xp.all(xp.isfinite(obs[..., :ANT_STATE_ENTRIES]), axis=-1) & (low <= z) & (z <= high)
    return ~healthy


def _halfcheetah(obs: Any, xp: ModuleType) -> Any:
    return xp.zeros(obs.shape[:-1], dtype=bool)


def _inverted_pendulum(obs: Any, xp: ModuleType) -> Any:
    return ~xp.all(xp.isfinite(obs), axis=-1) | (xp.abs(obs[..., 1]) > INVERTED_PENDULUM_MAX_ANGLE)


def _cartpole(obs: Any, xp: ModuleType) -> Any:
    return (xp.abs(obs[..., 0]) > CARTPOLE_MAX_POSITION) | (xp.abs(obs[..., 2]) > CARTPOLE_MAX_ANGLE)


_RULES: dict[str, Callable[[Any, ModuleType], Any]] = {
    "hopper": _hopper,
    "walker2d": _walker2d,
    "ant": _ant,
    "halfcheetah": _halfcheetah,
    "inverted-pendulum": _inverted_pendulum,
    "cartpole": _cartpole,
}


def terminated(task: str | TaskInfo, next_obs: Any, xp: ModuleType = numpy) -> Any:
    """Whether ``task``'s episode terminates on reaching ``next_obs``, as Gymnasium's env decides.

    ``next_obs`` has shape ``(..., obs_dim)``; the result is a boolean array of shape ``(...)``.
    ``xp`` is ``numpy`` or ``jax.numpy``; with ``jax.numpy`` the call traces under ``jax.jit``
    (``task`` and ``xp`` static). See the module docstring for each task's rule.
    """
    info = get_task(task)
    obs = xp.asarray(next_obs)
    if obs.ndim == 0 or obs.shape[-1] != info.obs_dim:
        raise DrorlError(f"{info.name} termination: observations must have shape (..., {info.obs_dim}), "
                         f"got {tuple(obs.shape)}")
    return _RULES[info.name](obs, xp)
