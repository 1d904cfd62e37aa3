"""The task table: which Gymnasium MuJoCo environments drorl knows, their shapes and reference returns."""

from __future__ import annotations

from dataclasses import dataclass

from drorl.errors import DrorlError


@dataclass(frozen=True)
class TaskInfo:
    """One task: its short name, Gymnasium id, shapes, episode length and D4RL reference returns.

    ``d4rl_ref_min`` / ``d4rl_ref_max`` are the random / expert returns D4RL normalises with
    (``None`` for tasks D4RL does not cover, such as the small test task).
    """

    name: str
    gym_id: str
    obs_dim: int
    act_dim: int
    max_episode_steps: int
    d4rl_ref_min: float | None
    d4rl_ref_max: float | None
    num_actions: int | None = None  # discrete tasks: actions are one column holding 0..num_actions-1

    @property
    def discrete(self) -> bool:
        return self.num_actions is not None


TASKS: dict[str, TaskInfo] = {
    task.name: task
    for task in (
        TaskInfo("hopper", "Hopper-v5", 11, 3, 1000, -20.272305, 3234.3),
        TaskInfo("halfcheetah", "HalfCheetah-v5", 17, 6, 1000, -280.178953, 12135.0),
        TaskInfo("walker2d", "Walker2d-v5", 17, 6, 1000, 1.629008, 4592.3),
        TaskInfo("ant", "Ant-v5", 105, 8, 1000, -325.6, 3879.7),
        TaskInfo("inverted-pendulum", "InvertedPendulum-v5", 4, 1, 1000, None, None),
        TaskInfo("cartpole", "CartPole-v1", 4, 1, 500, None, None, num_actions=2),
        # the safety tasks of DSRL (drorl.envs.safety, which checks these shapes against its own)
        TaskInfo("safe-unicycle", "drorl/SafeUnicycle-v0", 15, 2, 100, None, None),
        TaskInfo("safe-double-integrator", "drorl/SafeDoubleIntegrator-v0", 15, 2, 100, None, None),
        TaskInfo("safe-quadcopter", "drorl/SafeQuadcopter-v0", 25, 3, 100, None, None),
    )
}


def get_task(task: str | TaskInfo) -> TaskInfo:
    """Look a task up by short name (``"hopper"``) or Gymnasium id (``"Hopper-v5"``), case-insensitively.

    A ``TaskInfo`` is returned unchanged, so every function taking a task accepts either form.
    """
    if isinstance(task, TaskInfo):
        return task
    key = str(task).strip().lower()
    for info in TASKS.values():
        if key in (info.name, info.gym_id.lower()):
            return info
    raise DrorlError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
