"""The safety tasks of DSRL: a unicycle, a double integrator and a quadcopter among obstacles.

Pure JAX ``reset`` and ``step`` (vmap them over a batch, run them inside a compiled loop) and a
Gymnasium wrapper, ``SafetyEnv``, registered as ``drorl/SafeUnicycle-v0``,
``drorl/SafeDoubleIntegrator-v0`` and ``drorl/SafeQuadcopter-v0`` when this module is imported
(``gymnasium.make("drorl.envs.safety:drorl/SafeUnicycle-v0")`` imports it; ``drorl.envs.make_env``
takes the task names ``safe-unicycle``, ...). The systems follow the shared
spec ``safe-rl.md`` ("Systems" and its Corrections); all are control affine with an additive
disturbance xi:

* unicycle (first order): p_dot = v (cos th, sin th) + xi, th_dot = omega; the CBF is written for
  the look-ahead point p + l (cos th, sin th), whose velocity has relative degree one in (v, omega),
  with obstacle radii inflated by l;
* double integrator (second order): p_ddot = u + xi in the plane;
* quadcopter (second order): p_ddot = u - g e_z - k_d v + xi in 3-D, u the commanded thrust
  acceleration (its box holds the hover thrust g).

The second-order systems take the high-order CBF; their disturbance enters the acceleration only,
so every CBF row is affine in xi. Each episode draws a random obstacle layout, start and goal from
its key. Reward: progress towards the goal, a bonus on reaching it (which ends the episode). Cost:
1 for each step whose position lies inside an obstacle (the safety metrics count those).

Observations are translation-free where it matters: own state, goal - p, then per obstacle
(c_i - p, r_i). :func:`cbf_rows` rebuilds the layer's rows from an observation alone, so an
algorithm needs nothing but what it observes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import flax.struct
import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

from drorl.errors import DrorlError
from drorl.robust.cbf_qp import CBFRows, first_order_cbf_rows, high_order_cbf_rows

Array = jnp.ndarray


@dataclasses.dataclass(frozen=True)
class SafetyTask:
    """One system and its arena. Attributes:
        name: short name (``unicycle``, ``double-integrator``, ``quadcopter``).
        gym_id: the Gymnasium id it is registered under.
        order: 1 (velocity controlled) or 2 (acceleration controlled).
        pos_dim: dimension of the position (2 or 3), and of the disturbance.
        action_low, action_high: the control box, in physical units.
        centre_low, centre_high: the box obstacle centres are drawn from.
        radius_range: obstacle radii are drawn uniformly from it.
        start_low, start_high: the box start positions are drawn from.
        goal_low, goal_high: the box goals are drawn from.
        num_obstacles: obstacles per layout.
        dt: Euler time step (s).
        max_steps: steps before truncation.
        goal_radius: reaching within this distance of the goal ends the episode.
        progress_reward: reward per unit of distance gained towards the goal.
        goal_bonus: reward for reaching the goal.
        nominal_std: standard deviation of the nominal disturbance N(0, std^2 I).
        lookahead: the unicycle's look-ahead distance l (0 for the others).
        cbf_buffer: added to the radii the CBF guards (not to those the cost counts): room for the
            discrete-time step and the nominal noise, which the continuous-time CBF does not cover.
        cbf_alpha: first-order CBF gain, alpha(h) = cbf_alpha h.
        cbf_poles: (p1, p2) of the high-order CBF, k1 = p1 + p2, k0 = p1 p2.
        gravity: g of the quadcopter's drift (0 for the others).
        drag: linear drag k_d of the drift.
    """

    name: str
    gym_id: str
    order: int
    pos_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    centre_low: tuple[float, ...]
    centre_high: tuple[float, ...]
    radius_range: tuple[float, float]
    start_low: tuple[float, ...]
    start_high: tuple[float, ...]
    goal_low: tuple[float, ...]
    goal_high: tuple[float, ...]
    num_obstacles: int = 3
    dt: float = 0.1
    max_steps: int = 100
    goal_radius: float = 0.3
    progress_reward: float = 10.0
    goal_bonus: float = 10.0
    nominal_std: float = 0.1
    lookahead: float = 0.0
    cbf_buffer: float = 0.05
    cbf_alpha: float = 1.0
    cbf_poles: tuple[float, float] = (2.0, 2.0)
    gravity: float = 0.0
    drag: float = 0.0

    @property
    def act_dim(self) -> int:
        return len(self.action_low)

    @property
    def state_dim(self) -> int:
        """Entries of the dynamic state: (x, y, theta) or (p, v)."""
        return 3 if self.order == 1 else 2 * self.pos_dim

    @property
    def own_dim(self) -> int:
        """Observation entries of the robot itself: (x, y, cos th, sin th) or (p, v)."""
        return 4 if self.order == 1 else 2 * self.pos_dim

    @property
    def obs_dim(self) -> int:
        return self.own_dim + self.pos_dim + self.num_obstacles * (self.pos_dim + 1)


TASKS: dict[str, SafetyTask] = {
    "unicycle": SafetyTask(
        "unicycle", "drorl/SafeUnicycle-v0", order=1, pos_dim=2, action_low=(-1.0, -1.0), action_high=(1.0, 1.0),
        centre_low=(-1.0, -1.2), centre_high=(1.0, 1.2), radius_range=(0.25, 0.45), start_low=(-2.0, -1.0),
        start_high=(-2.0, 1.0), goal_low=(2.0, -1.0), goal_high=(2.0, 1.0), lookahead=0.2),
    "double-integrator": SafetyTask(
        "double-integrator", "drorl/SafeDoubleIntegrator-v0", order=2, pos_dim=2, action_low=(-1.0, -1.0),
        action_high=(1.0, 1.0), centre_low=(-1.0, -1.2), centre_high=(1.0, 1.2), radius_range=(0.25, 0.45),
        start_low=(-2.0, -1.0), start_high=(-2.0, 1.0), goal_low=(2.0, -1.0), goal_high=(2.0, 1.0)),
    "quadcopter": SafetyTask(
        "quadcopter", "drorl/SafeQuadcopter-v0", order=2, pos_dim=3, action_low=(-2.0, -2.0, 9.81 - 3.0),
        action_high=(2.0, 2.0, 9.81 + 3.0), centre_low=(-1.0, -1.2, 0.5), centre_high=(1.0, 1.2, 1.5),
        radius_range=(0.3, 0.5), start_low=(-2.0, -1.0, 1.0), start_high=(-2.0, 1.0, 1.0),
        goal_low=(2.0, -1.0, 0.5), goal_high=(2.0, 1.0, 1.5), num_obstacles=4, gravity=9.81, drag=0.3),
}
DISTURBANCE_FAMILIES = ("nominal", "shift", "heavy_tail")


def get_safety_task(name: str) -> SafetyTask:
    """A task by short name (``unicycle``), ``safe-`` name (``safe-unicycle``) or Gymnasium id."""
    key = str(name).strip().lower().removeprefix("safe-")
    for task in TASKS.values():
        if key in (task.name, task.gym_id.lower()):
            return task
    raise DrorlError(f"unknown safety task {name!r}; expected one of {', '.join(TASKS)}")


@dataclasses.dataclass(frozen=True)
class Disturbance:
    """A test family of the additive disturbance xi (spec, "Systems"). Attributes:
        family: ``nominal`` (N(0, std^2 I)), ``shift`` (that noise plus a mean of norm ``magnitude``
            in a direction drawn per episode), ``heavy_tail`` (Student-t noise with ``magnitude``
            degrees of freedom, scaled by std).
        magnitude: the shift's norm, or the degrees of freedom (> 0) of the heavy tail.
    """

    family: str = "nominal"
    magnitude: float = 0.0

    def __post_init__(self) -> None:
        if self.family not in DISTURBANCE_FAMILIES:
            raise DrorlError(f"unknown disturbance family {self.family!r}; expected one of "
                             f"{', '.join(DISTURBANCE_FAMILIES)}")
        if (self.family == "heavy_tail" and not self.magnitude > 0) or self.magnitude < 0:
            raise DrorlError(f"disturbance {self.family}={self.magnitude}: expected a magnitude >= 0 "
                             f"(> 0 degrees of freedom for heavy_tail)")

    @property
    def label(self) -> str:
        return self.family if self.family == "nominal" else f"{self.family}={self.magnitude:g}"

    @property
    def parameters(self) -> tuple[float, float]:
        """(norm of the mean shift, Student-t degrees of freedom or 0 for Gaussian noise)."""
        return (self.magnitude if self.family == "shift" else 0.0,
                self.magnitude if self.family == "heavy_tail" else 0.0)


NOMINAL = Disturbance()


@flax.struct.dataclass
class EnvState:
    """One episode: dynamic state, layout, the episode's disturbance and its random stream.

    ``disturbance_df`` is 0 for Gaussian noise, else the Student-t degrees of freedom.
    """

    state: Array
    goal: Array
    centres: Array
    radii: Array
    disturbance_mean: Array
    disturbance_df: Array
    steps: Array
    key: Array


class StepOutput(NamedTuple):
    obs: Array
    reward: Array
    cost: Array
    terminated: Array
    truncated: Array


def _uniform(key: Array, low: tuple[float, ...], high: tuple[float, ...], shape: tuple[int, ...] = ()) -> Array:
    return jax.random.uniform(key, shape + (len(low),), minval=jnp.asarray(low), maxval=jnp.asarray(high))


def reset(task: SafetyTask, key: Array, disturbance: Disturbance = NOMINAL) -> tuple[EnvState, Array]:
    """A new episode from ``key``: layout, start (at rest, heading towards +x), goal, shift direction."""
    return reset_with_parameters(task, key, *disturbance.parameters)


def reset_with_parameters(task: SafetyTask, key: Array, shift: float | Array,
                          df: float | Array) -> tuple[EnvState, Array]:
    """:func:`reset` with the disturbance as (possibly traced) ``Disturbance.parameters``: one compiled
    program serves every family."""
    k_centres, k_radii, k_start, k_goal, k_heading, k_direction, k_episode = jax.random.split(key, 7)
    centres = _uniform(k_centres, task.centre_low, task.centre_high, (task.num_obstacles,))
    radii = jax.random.uniform(k_radii, (task.num_obstacles,), minval=task.radius_range[0],
                               maxval=task.radius_range[1])
    start = _uniform(k_start, task.start_low, task.start_high)
    if task.order == 1:
        state = jnp.concatenate([start, jax.random.uniform(k_heading, (1,), minval=-0.3, maxval=0.3)])
    else:
        state = jnp.concatenate([start, jnp.zeros(task.pos_dim)])
    direction = jax.random.normal(k_direction, (task.pos_dim,))
    direction = direction / jnp.linalg.norm(direction)
    env_state = EnvState(state, _uniform(k_goal, task.goal_low, task.goal_high), centres, radii,
                         shift * direction, jnp.asarray(df, jnp.float32), jnp.zeros((), jnp.int32), k_episode)
    return env_state, observe(task, env_state)


def observe(task: SafetyTask, env_state: EnvState) -> Array:
    """[own state, goal - p, (c_i - p, r_i) for each obstacle] (float32)."""
    p = env_state.state[:task.pos_dim]
    if task.order == 1:
        theta = env_state.state[2]
        own = jnp.stack([p[0], p[1], jnp.cos(theta), jnp.sin(theta)])
    else:
        own = env_state.state
    obstacles = jnp.concatenate([env_state.centres - p, env_state.radii[:, None]], axis=1).reshape(-1)
    return jnp.concatenate([own, env_state.goal - p, obstacles]).astype(jnp.float32)


def sample_disturbance(key: Array, std: float, mean: Array, df: Array) -> Array:
    """xi = mean + std z, z standard normal, or Student-t with ``df`` degrees of freedom when df > 0."""
    k_normal, k_chi2 = jax.random.split(key)
    z = jax.random.normal(k_normal, mean.shape)
    safe_df = jnp.where(df > 0, df, 1.0)
    chi2 = 2.0 * jax.random.gamma(k_chi2, 0.5 * safe_df)
    return mean + std * jnp.where(df > 0, z * jnp.sqrt(safe_df / chi2), z)


def _derivative(task: SafetyTask, state: Array, action: Array, xi: Array) -> Array:
    """x_dot = f(x) + g(x) u + xi, with xi in the position (first order) or acceleration channel."""
    if task.order == 1:
        theta = state[2]
        velocity = action[0] * jnp.stack([jnp.cos(theta), jnp.sin(theta)]) + xi
        return jnp.concatenate([velocity, action[1:2]])
    velocity = state[task.pos_dim:]
    return jnp.concatenate([velocity, action + acceleration_drift(task, velocity) + xi])


def acceleration_drift(task: SafetyTask, velocity: Array) -> Array:
    """f_a(v) = -g e_z - k_d v (zero on the double integrator)."""
    gravity = jnp.zeros(task.pos_dim).at[-1].set(task.gravity)
    return -gravity - task.drag * velocity


def obstacle_values(task: SafetyTask, position: Array, centres: Array, radii: Array) -> Array:
    """h_i = ||p - c_i||^2 - r_i^2 for the true (uninflated) obstacles; h < 0 is inside."""
    return jnp.sum((position[..., None, :] - centres) ** 2, axis=-1) - radii**2


def step(task: SafetyTask, env_state: EnvState, action: Array) -> tuple[EnvState, StepOutput]:
    """One Euler step of ``dt`` under the episode's disturbance; ``action`` is clipped to the box.

    Does not reset: a compiled loop resets where ``terminated | truncated``.
    """
    action = jnp.clip(action, jnp.asarray(task.action_low), jnp.asarray(task.action_high))
    key, k_xi = jax.random.split(env_state.key)
    xi = sample_disturbance(k_xi, task.nominal_std, env_state.disturbance_mean, env_state.disturbance_df)
    state = env_state.state + task.dt * _derivative(task, env_state.state, action, xi)
    before = jnp.linalg.norm(env_state.goal - env_state.state[:task.pos_dim])
    after = jnp.linalg.norm(env_state.goal - state[:task.pos_dim])
    reached = after < task.goal_radius
    reward = task.progress_reward * (before - after) + task.goal_bonus * reached
    inside = jnp.min(obstacle_values(task, state[:task.pos_dim], env_state.centres, env_state.radii)) < 0
    steps = env_state.steps + 1
    new = env_state.replace(state=state, steps=steps, key=key)
    return new, StepOutput(observe(task, new), reward.astype(jnp.float32), inside.astype(jnp.float32), reached,
                           steps >= task.max_steps)


class Episodes(NamedTuple):
    """Safety metrics of a batch of episodes [E] and the positions visited [E, max_steps + 1, d]
    (held at the last one after the episode ends)."""

    returns: Array
    reached: Array
    violated: Array
    violating_fraction: Array
    lengths: Array
    positions: Array


def rollouts(task: SafetyTask, policy: Callable[[Array, Array], Array], keys: Array,
             shift: float | Array = 0.0, df: float | Array = 0.0) -> Episodes:
    """One episode per key [E], every env stepped together by ``policy(obs [E, obs_dim], key) -> actions``.

    The disturbance is given by its ``Disturbance.parameters`` (shift, df), which may be traced. Pure
    and jittable (``policy`` closes over its parameters): the whole rollout is one ``lax.scan`` over
    ``max_steps``; an episode that ended stops counting. Violated: any step inside an obstacle (the
    spec's violation rate); violating fraction: such steps over the episode's length.
    """
    env_states, obs = jax.vmap(lambda key: reset_with_parameters(task, key, shift, df))(keys)
    policy_key = jax.random.fold_in(keys[0], 1)

    def body(carry, t):
        env_states, obs, done = carry
        actions = policy(obs, jax.random.fold_in(policy_key, t))
        env_states, out = jax.vmap(functools.partial(step, task))(env_states, actions)
        live = ~done
        stats = (out.reward * live, out.cost * live, out.terminated & live, live)
        return (env_states, out.obs, done | out.terminated | out.truncated), (stats, env_states.state[:, :task.pos_dim])

    start = env_states.state[:, :task.pos_dim]
    done = jnp.zeros(keys.shape[0], bool)
    _, ((rewards, costs, reached, live), positions) = jax.lax.scan(body, (env_states, obs, done),
                                                                   jnp.arange(task.max_steps))
    lengths = jnp.sum(live, axis=0)
    # positions after the end repeat the last live one
    positions = jnp.concatenate([start[None], positions], axis=0)
    last = jnp.take_along_axis(positions, lengths[None, :, None], axis=0)
    positions = jnp.where((jnp.arange(task.max_steps + 1)[:, None] <= lengths)[..., None], positions, last)
    return Episodes(jnp.sum(rewards, 0), jnp.any(reached, 0), jnp.sum(costs, 0) > 0,
                    jnp.sum(costs, 0) / jnp.maximum(lengths, 1), lengths, jnp.swapaxes(positions, 0, 1))


def split_observation(task: SafetyTask, obs: Array) -> tuple[Array, Array, Array, Array]:
    """(own state, goal - p, c_i - p [..., k, d], r_i [..., k]) of observations [..., obs_dim]."""
    d, own = task.pos_dim, task.own_dim
    obstacles = obs[..., own + d:].reshape(obs.shape[:-1] + (task.num_obstacles, d + 1))
    return obs[..., :own], obs[..., own:own + d], obstacles[..., :d], obstacles[..., d]


def cbf_rows(task: SafetyTask, obs: Array, disturbance_mean: Array) -> CBFRows:
    """The CBF rows A u >= b - eps of every obstacle from observations [..., obs_dim] alone.

    Written in the robot's frame (p = 0, obstacles at c_i - p): first order for the unicycle (its
    look-ahead point, radii inflated by l), high order for the others; radii grow by ``cbf_buffer``.
    ``disturbance_mean`` [..., d]
    is xi_bar, the mean the layer guards against.
    """
    own, _, centres, radii = split_observation(task, obs)
    d = task.pos_dim
    if task.order == 1:
        cos, sin, l = own[..., 2], own[..., 3], task.lookahead
        heading = jnp.stack([cos, sin], axis=-1)
        control = jnp.stack([jnp.stack([cos, -l * sin], -1), jnp.stack([sin, l * cos], -1)], -2)
        return first_order_cbf_rows(l * heading, jnp.zeros_like(heading), control, centres,
                                    radii + task.cbf_buffer + l, disturbance_mean, alpha=task.cbf_alpha)
    velocity = own[..., d:]
    control = jnp.broadcast_to(jnp.eye(d), velocity.shape[:-1] + (d, d))
    p1, p2 = task.cbf_poles
    return high_order_cbf_rows(jnp.zeros_like(velocity), velocity, control, centres, radii + task.cbf_buffer,
                               disturbance_mean, p1=p1, p2=p2, drift=acceleration_drift(task, velocity))


def reset_key(rng: np.random.Generator) -> Array:
    """The JAX key of an episode, drawn from the Gymnasium env's seeded generator."""
    return jax.random.PRNGKey(int(rng.integers(2**31 - 1)))


@functools.lru_cache(maxsize=None)
def compiled(task: SafetyTask, disturbance: Disturbance = NOMINAL) -> tuple[Any, Any]:
    """``reset(key)`` and ``step(env_state, action)`` of ``task`` under ``disturbance``, jitted once."""
    return (jax.jit(functools.partial(reset, task, disturbance=disturbance)),
            jax.jit(functools.partial(step, task)))


class SafetyEnv(gymnasium.Env):
    """The Gymnasium face of a safety task: ``step`` returns the cost in ``info["cost"]``.

    ``set_perturbation`` (``Disturbance`` or None for nominal) changes the disturbance from the
    next reset, as the MuJoCo tasks' perturbations do, so evaluation loops can sweep families.
    """

    metadata = {"render_modes": []}

    def __init__(self, system: str, disturbance: Disturbance | None = None):
        self.task = get_safety_task(system)
        self.disturbance = disturbance or NOMINAL
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (self.task.obs_dim,), np.float32)
        self.action_space = gymnasium.spaces.Box(np.asarray(self.task.action_low, np.float32),
                                                 np.asarray(self.task.action_high, np.float32), dtype=np.float32)
        self._env_state: EnvState | None = None

    def set_perturbation(self, disturbance: Disturbance | None) -> None:
        if disturbance is not None and not isinstance(disturbance, Disturbance):
            raise DrorlError(f"safety tasks take a Disturbance ({', '.join(DISTURBANCE_FAMILIES)}); "
                             f"got {disturbance!r}")
        self.disturbance = disturbance or NOMINAL

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        reset_fn, _ = compiled(self.task, self.disturbance)
        self._env_state, obs = reset_fn(reset_key(self.np_random))
        return np.asarray(obs), {}

    def step(self, action):
        if self._env_state is None:
            raise DrorlError("call reset before step")
        _, step_fn = compiled(self.task, self.disturbance)
        self._env_state, out = step_fn(self._env_state, jnp.asarray(action, jnp.float32))
        return (np.asarray(out.obs), float(out.reward), bool(out.terminated), bool(out.truncated),
                {"cost": float(out.cost)})


for _task in TASKS.values():
    if _task.gym_id not in gymnasium.registry:
        gymnasium.register(_task.gym_id, entry_point="drorl.envs.safety:SafetyEnv", kwargs={"system": _task.name})
