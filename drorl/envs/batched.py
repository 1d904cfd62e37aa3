"""Batched MuJoCo physics for evaluation: N perturbed copies of a task env stepped together in C.

``BatchedMujocoEnvs`` reproduces N ``make_env(task, perturbation)`` envs (Gymnasium's v5 MuJoCo
envs with their default arguments, the time limit and ``PerturbedEnv``): the same resets for the
same seeds, then the same observations, rewards and termination flags for the same actions. The
physics runs on ``mujoco.batch.Batch``, whose thread pool steps the chosen simulations without the
GIL, each on its slot's copy of the task model with the slot's perturbation written in. Its state
rows carry the constraint solver's warm start from step to step as one ``MjData`` does, so the
states are bit-identical to Gymnasium's (``mujoco.rollout`` returns no warm start, and its states
drift from Gymnasium's by round-off that grows along an episode).

Gymnasium's per-step quantities are recomputed in vectorised numpy from the states, following
``gymnasium/envs/mujoco/*_v5.py``. Ant needs the contact forces ``cfrc_ext`` that Gymnasium gets
from ``mj_rnePostConstraint`` on the data a step leaves behind (with RK4 that is the last
Runge-Kutta stage, not a state of the trajectory), so the ant batch keeps one ``MjData`` per
simulation and computes them per env on a copy of it.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import mujoco
import numpy as np
from gymnasium.utils import seeding
from mujoco import batch as mujoco_batch

from drorl.envs.perturbations import (
    AnyPerturbation,
    PerturbedEnv,
    action_noise_generator,
    action_noise_variance,
    apply_perturbation,
    check_perturbation,
    noisy_action,
    without_action_noise,
)
from drorl.errors import DrorlError

HealthCheck = Callable[[np.ndarray, np.ndarray], np.ndarray]
RewardRule = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _hopper_healthy(qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """Hopper-v5 ``is_healthy``: state after (x, z) within +-100, z > 0.7, |torso angle| < 0.2."""
    state = np.concatenate([qpos, qvel], axis=1)[:, 2:]
    z, angle = qpos[:, 1], qpos[:, 2]
    healthy_state = np.all((-100.0 < state) & (state < 100.0), axis=1)
    return healthy_state & (0.7 < z) & (z < np.inf) & (-0.2 < angle) & (angle < 0.2)


def _walker2d_healthy(qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """Walker2d-v5 ``is_healthy``: 0.8 < z < 2 and |torso angle| < 1."""
    z, angle = qpos[:, 1], qpos[:, 2]
    return (0.8 < z) & (z < 2.0) & (-1.0 < angle) & (angle < 1.0)


def _ant_healthy(qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """Ant-v5 ``is_healthy``: a finite state and 0.2 <= torso z <= 1."""
    finite = np.isfinite(np.concatenate([qpos, qvel], axis=1)).all(axis=1)
    return finite & (0.2 <= qpos[:, 2]) & (qpos[:, 2] <= 1.0)


def _always_healthy(qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """HalfCheetah-v5 never terminates."""
    return np.ones(len(qpos), dtype=bool)


def _pendulum_upright(qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """InvertedPendulum-v5 goes on while the observation is finite and the pole within 0.2 rad."""
    finite = np.isfinite(np.concatenate([qpos, qvel], axis=1)).all(axis=1)
    return finite & ~(np.abs(qpos[:, 1]) > 0.2)


def _survive_reward(x_velocity: np.ndarray, healthy: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Hopper, Walker2d and Ant: forward velocity plus 1 while healthy, minus the costs."""
    return (x_velocity + healthy * 1.0) - costs


def _forward_reward(x_velocity: np.ndarray, healthy: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """HalfCheetah: forward velocity minus the control cost."""
    return x_velocity - costs


def _upright_reward(x_velocity: np.ndarray, healthy: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """InvertedPendulum: 1 for every step that does not terminate."""
    return healthy * 1.0


@dataclass(frozen=True)
class GymnasiumRules:
    """One task's Gymnasium v5 step and reset rules, with the default arguments ``make_env`` uses.

    ``skipped_qpos``: leading qpos entries left out of the observation. ``qvel_clip``: the
    observation clips qvel to +- this. ``normal_qvel_noise``: reset adds ``scale * N(0, 1)`` to qvel
    rather than ``U(-scale, scale)``. ``forward``: what the forward reward differentiates, ``"qpos"``
    (qpos[0]), ``"torso"`` (body 1's x position) or ``None``. ``contact_cost_weight``: ant's cost of
    the clipped contact forces, which its observation also holds (``None``: no contact forces).
    """

    skipped_qpos: int
    reset_noise_scale: float
    normal_qvel_noise: bool
    ctrl_cost_weight: float
    qvel_clip: float | None
    forward: str | None
    contact_cost_weight: float | None
    healthy: HealthCheck
    reward: RewardRule
    terminates: bool


RULES: dict[str, GymnasiumRules] = {
    "hopper": GymnasiumRules(
        skipped_qpos=1, reset_noise_scale=5e-3, normal_qvel_noise=False, ctrl_cost_weight=1e-3, qvel_clip=10.0,
        forward="qpos", contact_cost_weight=None, healthy=_hopper_healthy, reward=_survive_reward, terminates=True),
    "walker2d": GymnasiumRules(
        skipped_qpos=1, reset_noise_scale=5e-3, normal_qvel_noise=False, ctrl_cost_weight=1e-3, qvel_clip=10.0,
        forward="qpos", contact_cost_weight=None, healthy=_walker2d_healthy, reward=_survive_reward, terminates=True),
    "halfcheetah": GymnasiumRules(
        skipped_qpos=1, reset_noise_scale=0.1, normal_qvel_noise=True, ctrl_cost_weight=0.1, qvel_clip=None,
        forward="qpos", contact_cost_weight=None, healthy=_always_healthy, reward=_forward_reward, terminates=False),
    "ant": GymnasiumRules(
        skipped_qpos=2, reset_noise_scale=0.1, normal_qvel_noise=True, ctrl_cost_weight=0.5, qvel_clip=None,
        forward="torso", contact_cost_weight=5e-4, healthy=_ant_healthy, reward=_survive_reward, terminates=True),
    "inverted-pendulum": GymnasiumRules(
        skipped_qpos=0, reset_noise_scale=0.01, normal_qvel_noise=False, ctrl_cost_weight=0.0, qvel_clip=None,
        forward=None, contact_cost_weight=None, healthy=_pendulum_upright, reward=_upright_reward, terminates=True),
}
BATCHED_TASKS: frozenset[str] = frozenset(RULES)

CONTACT_FORCE_RANGE = (-1.0, 1.0)  # Ant-v5 clips cfrc_ext to this for its observation and cost


def observations(
    rules: GymnasiumRules, qpos: np.ndarray, qvel: np.ndarray, contact_forces: np.ndarray | None,
) -> np.ndarray:
    """Gymnasium's ``_get_obs`` for ``[n]`` states; ``contact_forces`` ``[n, nbody, 6]`` for ant."""
    velocity = qvel if rules.qvel_clip is None else np.clip(qvel, -rules.qvel_clip, rules.qvel_clip)
    parts = [qpos[:, rules.skipped_qpos:], velocity]
    if contact_forces is not None:
        parts.append(np.clip(contact_forces[:, 1:], *CONTACT_FORCE_RANGE).reshape(len(qpos), -1))
    return np.concatenate(parts, axis=1)


def step_costs(rules: GymnasiumRules, actions: np.ndarray, contact_forces: np.ndarray | None) -> np.ndarray:
    """Control cost (float32, as Gymnasium computes it from float32 actions) plus ant's contact cost."""
    costs = rules.ctrl_cost_weight * np.sum(np.square(actions), axis=1)
    if contact_forces is None:
        return costs
    clipped = np.clip(contact_forces, *CONTACT_FORCE_RANGE).reshape(len(actions), -1)
    return costs + rules.contact_cost_weight * np.sum(np.square(clipped), axis=1)


def reset_states(
    rules: GymnasiumRules, init_qpos: np.ndarray, init_qvel: np.ndarray, seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``(qpos, qvel)`` Gymnasium's ``reset(seed=seed)`` starts from: the same generator, the same draws."""
    rng, _ = seeding.np_random(seed)
    scale = rules.reset_noise_scale
    qpos = init_qpos + rng.uniform(low=-scale, high=scale, size=len(init_qpos))
    if rules.normal_qvel_noise:
        return qpos, init_qvel + scale * rng.standard_normal(len(init_qvel))
    return qpos, init_qvel + rng.uniform(low=-scale, high=scale, size=len(init_qvel))


class BatchedMujocoEnvs:
    """``num_envs`` copies of a MuJoCo ``PerturbedEnv`` (its task, model and time limit), stepped together.

    Each slot has its own perturbation (``set_perturbations``), reset seed and episode clock.
    ``reset`` and ``step`` act on the slots ``ids`` (sorted, unique) and return one row per id;
    the other slots keep their state. Actions are float32, as the env's action space.
    """

    def __init__(self, env: PerturbedEnv, num_envs: int, nthread: int | None = None):
        if not isinstance(env, PerturbedEnv) or env.task.name not in RULES:
            raise DrorlError(f"batched physics needs a MuJoCo task env; expected one of {', '.join(sorted(RULES))}")
        if num_envs < 1:
            raise DrorlError(f"batched physics needs at least one env; got {num_envs}")
        mujoco_env = env.unwrapped
        self.task = env.task
        self.rules = RULES[self.task.name]
        self._template = copy.copy(mujoco_env.model)
        self._nominal = env.nominal
        self._init_qpos, self._init_qvel = mujoco_env.init_qpos.copy(), mujoco_env.init_qvel.copy()
        self._frame_skip, self._dt = mujoco_env.frame_skip, mujoco_env.dt
        self._action_bounds = (env.action_space.low.copy(), env.action_space.high.copy())
        threads = len(os.sched_getaffinity(0)) if nthread is None else nthread
        persistent = self.rules.contact_cost_weight is not None  # ant reads contact forces off each MjData
        self._batch = mujoco_batch.Batch(self._template, num_envs, nthread=threads, persistent=persistent)
        self._scratch = mujoco.MjData(self._template) if persistent else None
        self._qpos, self._qvel, self._ctrl = (self._batch.bind(name) for name in ("qpos", "qvel", "ctrl"))
        self._xpos = self._batch.bind("xpos") if self.rules.forward == "torso" else None
        self._models: dict[AnyPerturbation | None, mujoco.MjModel] = {}
        self._perturbations: list[AnyPerturbation | None] = [None] * num_envs
        self._noisy = np.zeros(num_envs, dtype=bool)  # slots whose actions get action noise
        self._noise: list[np.random.Generator | None] = [None] * num_envs
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self.set_perturbations(self._perturbations)

    @property
    def num_envs(self) -> int:
        """Number of env slots."""
        return self._batch.nsim

    @property
    def nthread(self) -> int:
        """Threads the physics runs on, the caller's included."""
        return self._batch.nthread

    def set_perturbations(self, perturbations: Sequence[AnyPerturbation | None]) -> None:
        """Give slot ``i`` the dynamics of ``perturbations[i]`` (``None``: nominal) from its next reset on."""
        if len(perturbations) != self.num_envs:
            raise DrorlError(f"need one perturbation per env slot; got {len(perturbations)} for {self.num_envs} slots")
        for perturbation in perturbations:
            check_perturbation(self.task, perturbation)
        self._perturbations = list(perturbations)
        self._noisy = np.array([action_noise_variance(p) > 0 for p in perturbations])
        self._batch.set_models([self._model_for(p) for p in perturbations])

    def reset(self, ids: Sequence[int] | np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        """Start episodes in slots ``ids`` as Gymnasium's ``reset(seed=seeds[k])`` does; returns ``[n, obs_dim]``."""
        ids = self._checked_ids(ids)
        if len(seeds) != len(ids):
            raise DrorlError(f"need one reset seed per env; got {len(seeds)} for {len(ids)} envs")
        starts = [reset_states(self.rules, self._init_qpos, self._init_qvel, int(seed)) for seed in seeds]
        self._batch.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        self._qpos[ids] = [qpos for qpos, _ in starts]
        self._qvel[ids] = [qvel for _, qvel in starts]
        self._batch.forward(ids)  # mj_forward, as Gymnasium's set_state
        for i, seed in zip(ids, seeds):
            self._noise[i] = action_noise_generator(int(seed))
        self._elapsed[ids] = 0
        # Gymnasium's reset zeroes cfrc_ext (mj_resetData) and mj_forward leaves it so.
        contact_forces = np.zeros((len(ids), self._template.nbody, 6)) if self._scratch is not None else None
        return observations(self.rules, self._qpos[ids], self._qvel[ids], contact_forces)

    def step(
        self, ids: Sequence[int] | np.ndarray, actions: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply ``actions[k]`` to slot ``ids[k]`` for one env step (``frame_skip`` physics steps).

        Returns ``(obs [n, obs_dim], rewards [n], terminated [n], truncated [n])`` as Gymnasium's
        ``step`` (truncated at the task's ``max_episode_steps``).
        """
        ids = self._checked_ids(ids)
        actions = np.array(actions, dtype=np.float32)
        if actions.shape != (len(ids), self.task.act_dim):
            raise DrorlError(f"actions must have shape {(len(ids), self.task.act_dim)}; got {actions.shape}")
        for k in np.flatnonzero(self._noisy[ids]):
            i = ids[k]
            actions[k] = noisy_action(actions[k], self._perturbations[i], self._noise[i], *self._action_bounds)
        x_before = self._forward_position(ids)
        self._ctrl[ids] = actions
        self._batch.step(ids, nstep=self._frame_skip)
        self._elapsed[ids] += 1
        qpos, qvel = self._qpos[ids], self._qvel[ids]
        contact_forces = self._contact_forces(ids) if self._scratch is not None else None
        x_velocity = (self._forward_position(ids) - x_before) / self._dt
        healthy = self.rules.healthy(qpos, qvel)
        rewards = self.rules.reward(x_velocity, healthy, step_costs(self.rules, actions, contact_forces))
        terminated = ~healthy if self.rules.terminates else np.zeros(len(ids), dtype=bool)
        truncated = self._elapsed[ids] >= self.task.max_episode_steps
        return observations(self.rules, qpos, qvel, contact_forces), rewards, terminated, truncated

    def _model_for(self, perturbation: AnyPerturbation | None) -> mujoco.MjModel:
        """A copy of the task model with ``perturbation`` written in, shared by every slot that has it."""
        key = without_action_noise(perturbation)
        if key not in self._models:
            model = copy.copy(self._template)
            apply_perturbation(model, self._nominal, self.task, key)
            self._models[key] = model
        return self._models[key]

    def _forward_position(self, ids: np.ndarray) -> np.ndarray:
        """What the forward reward differentiates: qpos[0], or the torso's x from the last step's kinematics."""
        if self.rules.forward == "torso":
            return self._xpos[ids, 1, 0]
        if self.rules.forward == "qpos":
            return self._qpos[ids, 0]
        return np.zeros(len(ids))

    def _contact_forces(self, ids: np.ndarray) -> np.ndarray:
        """``cfrc_ext`` ``[n, nbody, 6]`` after the last step, as Gymnasium's ``mj_rnePostConstraint`` gives it."""
        forces = np.empty((len(ids), self._template.nbody, 6))
        for k, i in enumerate(ids):
            data = self._batch.get_data(int(i), self._scratch)
            mujoco.mj_rnePostConstraint(self._model_for(self._perturbations[i]), data)
            forces[k] = data.cfrc_ext
        return forces

    def _checked_ids(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """``ids`` as int32 after checking they are sorted, unique slot indices."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids[0] < 0 or ids[-1] >= self.num_envs or np.any(np.diff(ids) <= 0)):
            raise DrorlError(f"env ids must be sorted, unique and in [0, {self.num_envs}); got {ids.tolist()}")
        return ids.astype(np.int32)
