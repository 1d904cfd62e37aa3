"""Dataset generation: roll a behaviour policy out in a batch of environments, in D4RL layout.

Episodes are collected whole, in the order they finish; a time limit is a ``timeout``, a failure
a ``terminal``. When a transition budget cuts the last episode, its last kept row is marked as a
time-out. Everything is seeded: the same task, kind and seed give byte-identical arrays.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

import drorl
from drorl.data.dataset import Dataset
from drorl.envs import get_task, make_env
from drorl.errors import DrorlError
from drorl.progress import progress_bar

# A behaviour policy for generation: observations [N, obs_dim] -> actions [N, act_dim].
BatchPolicy = Callable[[np.ndarray], np.ndarray]

GENERATABLE_KINDS = ("random", "expert", "expert-demos")
ALL_KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert", "mixed", "expert-demos")


def collect(task: str, policy: BatchPolicy, *, transitions: int | None = None,
            episodes: int | None = None, seed: int = 0, num_envs: int = 8,
            progress: bool = True) -> dict[str, np.ndarray]:
    """Roll ``policy`` out until ``transitions`` rows (or ``episodes`` whole episodes) are collected."""
    if (transitions is None) == (episodes is None):
        raise ValueError("give exactly one of transitions or episodes")
    info = get_task(task)
    envs = [make_env(info) for _ in range(num_envs)]
    obs = np.stack([env.reset(seed=seed * 10_007 + i)[0] for i, env in enumerate(envs)])
    buffers: list[list[tuple]] = [[] for _ in envs]
    done_episodes: list[list[tuple]] = []
    total = 0
    target = transitions if transitions is not None else episodes
    unit = "transitions" if transitions is not None else "episodes"
    with progress_bar(f"{info.name} rollouts", total=target, enabled=progress, unit=unit) as advance:
        while (total if transitions is not None else len(done_episodes)) < target:
            actions = np.asarray(policy(obs.astype(np.float32)), np.float32)
            for i, env in enumerate(envs):
                nxt, reward, terminated, truncated, _ = env.step(actions[i])
                buffers[i].append((obs[i].copy(), actions[i], reward, nxt, terminated, truncated and not terminated))
                if terminated or truncated:
                    done_episodes.append(buffers[i])
                    total += len(buffers[i])
                    advance(len(buffers[i]) if transitions is not None else 1)
                    buffers[i] = []
                    nxt, _ = env.reset()
                obs[i] = nxt
    for env in envs:
        env.close()
    if episodes is not None:
        done_episodes = done_episodes[:episodes]
    rows = [row for episode in done_episodes for row in episode]
    if transitions is not None:
        rows = rows[:transitions]
    arrays = {
        "observations": np.asarray([r[0] for r in rows], np.float32),
        "actions": np.asarray([r[1] for r in rows], np.float32),
        "rewards": np.asarray([r[2] for r in rows], np.float32),
        "next_observations": np.asarray([r[3] for r in rows], np.float32),
        "terminals": np.asarray([r[4] for r in rows], bool),
        "timeouts": np.asarray([r[5] for r in rows], bool),
    }
    if not (arrays["terminals"][-1] or arrays["timeouts"][-1]):
        arrays["timeouts"][-1] = True  # the budget cut this episode: mark it like a time limit
    return arrays


def random_policy(task: str, seed: int) -> BatchPolicy:
    """Uniform actions over the task's action box, from a seeded generator."""
    env = make_env(task)
    low, high = env.action_space.low.astype(np.float32), env.action_space.high.astype(np.float32)
    env.close()
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(low, high, size=(obs.shape[0], low.shape[0])).astype(np.float32)


LQR_EXPERT_NOISE = 0.3  # std of the Gaussian action noise of the small task's expert (actions in [-3, 3])


def expert_policy(task: str, seed: int = 0) -> tuple[BatchPolicy, str]:
    """The expert behaviour policy of ``task`` and its id.

    The small task's expert is the scripted LQR controller with N(0, 0.3^2) action noise, clipped
    to the action box: a stochastic expert like the SAC experts of the locomotion tasks. Noise-free
    LQR demonstrations stay within ~0.005 of the upright pose, too narrow for BC to generalise
    from (measured: BC from them balances for 2-66 steps; with the noise, for all 1000).
    The MuJoCo locomotion experts come with the behaviour-policy zoo.
    """
    info = get_task(task)
    if info.name != "inverted-pendulum":
        raise DrorlError(f"no expert behaviour policy for {info.name!r} in this version; "
                         f"the kinds available for it are: random")
    from drorl.envs.scripted import lqr_controller

    controller = lqr_controller(info.name)
    rng = np.random.default_rng(seed)

    def noisy_lqr(obs: np.ndarray) -> np.ndarray:
        action = controller(obs) + rng.normal(0.0, LQR_EXPERT_NOISE, size=(obs.shape[0], info.act_dim))
        return np.clip(action, controller.low, controller.high).astype(np.float32)

    return noisy_lqr, f"lqr+gaussian({LQR_EXPERT_NOISE})"


def mean_return(task: str, policy: BatchPolicy, episodes: int, seed: int) -> float:
    arrays = collect(task, policy, episodes=episodes, seed=seed, num_envs=min(episodes, 8), progress=False)
    ds = Dataset.from_arrays(arrays)
    return float(ds.episode_returns.mean())


def reference_returns(task: str, seed: int = 12345) -> dict[str, object]:
    """Random and expert reference returns for normalised scores, and where they come from."""
    info = get_task(task)
    random_ret = mean_return(info.name, random_policy(info.name, seed), 10, seed)
    if info.d4rl_ref_max is not None:
        return {"ref_min_score": random_ret, "ref_max_score": info.d4rl_ref_max,
                "ref_source": "random: measured (10 episodes); expert: D4RL constant"}
    expert, _ = expert_policy(info.name, seed)
    return {"ref_min_score": random_ret, "ref_max_score": mean_return(info.name, expert, 10, seed),
            "ref_source": "random and expert: measured (10 episodes each)"}


def generate(task: str, kind: str, *, transitions: int | None = None, episodes: int | None = None,
             seed: int = 0, num_envs: int = 8, progress: bool = True) -> Dataset:
    """Make a dataset of ``kind`` for ``task``: random, expert (transitions) or expert-demos (episodes)."""
    info = get_task(task)
    if kind not in ALL_KINDS:
        raise DrorlError(f"unknown dataset kind {kind!r}; expected one of {', '.join(ALL_KINDS)}")
    if kind not in GENERATABLE_KINDS:
        raise DrorlError(f"dataset kind {kind!r} needs the behaviour-policy zoo, which this version "
                         f"does not ship; available kinds: {', '.join(GENERATABLE_KINDS)}")
    if kind == "random":
        policy, policy_id = random_policy(info.name, seed), "uniform-random"
    else:
        policy, policy_id = expert_policy(info.name, seed)
    if kind == "expert-demos":
        episodes = episodes or 10
        transitions = None
    else:
        transitions = transitions or 1_000_000
        episodes = None
    arrays = collect(info.name, policy, transitions=transitions, episodes=episodes, seed=seed,
                     num_envs=num_envs, progress=progress)
    dataset = Dataset.from_arrays(arrays, obs_dim=info.obs_dim, act_dim=info.act_dim)
    returns = dataset.episode_returns
    metadata = {
        "env": info.name, "env_id": info.gym_id, "kind": kind, "seed": seed,
        "behavior_policy": policy_id,
        "behavior_return_mean": float(returns.mean()), "behavior_return_std": float(returns.std()),
        "generator": f"drorl {drorl.__version__}", "corruptions": [],
        **reference_returns(info.name),
    }
    return Dataset(**dataset.arrays(), metadata=metadata)
