"""Scripted experts that need no training: an LQR controller for small balancing tasks.

The quickstart uses it to produce expert demonstrations in seconds. The MuJoCo model is
linearised at its reference pose (``qpos0``, zero velocity, zero control) with finite
differences (``mujoco.mjd_transitionFD``), the linearisation is lifted to one env step
(the env's ``frame_skip`` physics steps under a held control), and the discrete algebraic
Riccati equation gives the feedback gain. ``mjd_transitionFD`` does not support the RK4
integrator some tasks use (InvertedPendulum-v5), so a copy of the model is linearised with the
Euler integrator at a timestep ``_SUBSTEPS`` times finer, which approximates the RK4 step closely.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import mujoco
import numpy as np
import scipy.linalg

from drorl.envs import make_env
from drorl.envs.tasks import TaskInfo, get_task
from drorl.errors import DrorlError

_SUBSTEPS = 10  # Euler steps per physics step of the linearised copy


@dataclass(frozen=True, eq=False)
class LinearController:
    """The policy ``obs -> clip(-gain @ obs, low, high)``, batched over any leading axes.

    ``gain`` has shape ``[act_dim, obs_dim]``; ``low`` and ``high`` are the action-space bounds.
    Actions come back as float32 with shape ``obs.shape[:-1] + (act_dim,)``.
    """

    gain: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        action = -np.asarray(obs, dtype=np.float64) @ self.gain.T
        return np.clip(action, self.low, self.high).astype(np.float32)


def _compose_steps(a: np.ndarray, b: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Compose ``steps`` linear steps ``x' = a x + b u`` with a held control ``u`` into one."""
    a_step, b_step = np.eye(a.shape[0]), np.zeros_like(b)
    for _ in range(steps):
        a_step, b_step = a @ a_step, a @ b_step + b
    return a_step, b_step


def _linearise(model: mujoco.MjModel, frame_skip: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` of ``x' = a x + b u`` for one env step at the reference pose, ``x = [qpos, qvel]``."""
    model = copy.copy(model)
    model.opt.integrator = mujoco.mjtIntegrator.mjINT_EULER
    model.opt.timestep /= _SUBSTEPS
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    a = np.zeros((2 * model.nv, 2 * model.nv))
    b = np.zeros((2 * model.nv, model.nu))
    mujoco.mjd_transitionFD(model, data, 1e-6, True, a, b, None, None)
    return _compose_steps(a, b, frame_skip * _SUBSTEPS)


def lqr_controller(
    task: str | TaskInfo = "inverted-pendulum", state_cost: float = 1.0, action_cost: float = 0.1
) -> LinearController:
    """An LQR controller for ``task``, whose observation must be ``[qpos, qvel]`` (InvertedPendulum-v5).

    The cost per env step is ``state_cost * |x|^2 + action_cost * |u|^2`` with ``x = [qpos, qvel]``
    measured from the reference pose (the pendulum upright, the cart centred).
    """
    info = get_task(task)
    env = make_env(info)
    try:
        model = env.unwrapped.model
        if model.nq != model.nv or model.na != 0 or info.obs_dim != 2 * model.nv:
            raise DrorlError(f"no LQR expert for task {info.name!r}: its observation is not [qpos, qvel]")
        a, b = _linearise(model, env.unwrapped.frame_skip)
        q = state_cost * np.eye(a.shape[0])
        r = action_cost * np.eye(b.shape[1])
        riccati = scipy.linalg.solve_discrete_are(a, b, q, r)
        gain = np.linalg.solve(r + b.T @ riccati @ b, b.T @ riccati @ a)
        low, high = (np.asarray(bound, np.float64) for bound in (env.action_space.low, env.action_space.high))
        return LinearController(gain=gain, low=low, high=high)
    finally:
        env.close()
