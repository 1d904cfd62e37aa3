"""Dataset generation: roll behaviour policies out in a batch of environments, in D4RL layout.

Episodes are collected whole; a time limit is a ``timeout``, a failure a ``terminal``. A transition
budget keeps episodes in the order they finish and marks the last kept row of the episode it cuts as
a time-out. An episode count keeps the first episodes to *start*, not the first to finish: parallel
envs finish short (failed) episodes first, so the first N to finish would over-represent failures.
Everything is seeded: the same task, kind and seed give byte-identical arrays.

Kinds (after D4RL): random, medium, expert, medium-expert (half each), mixed (random + medium,
half each), medium-replay (the zoo's training snapshots up to the medium policy, in training
order, with Gaussian exploration noise: an honest stand-in for a replay buffer, recorded as such
in the metadata) and expert-demos (whole expert episodes, for imitation).
"""

from __future__ import annotations


import numpy as np

import drorl
from drorl import zoo
from drorl.data.dataset import D4RL_KEYS, Dataset
from drorl.envs import action_bounds, get_task, make_env
from drorl.envs.policies import BatchPolicy, random_policy, with_noise
from drorl.errors import DrorlError
from drorl.progress import progress_bar

# A behaviour policy for generation: observations [N, obs_dim] -> actions [N, act_dim].

ALL_KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert", "mixed", "expert-demos")
DEFAULT_TRANSITIONS = 1_000_000  # rows of the RL kinds, as D4RL's
# DR-BC's demonstration sizes (2000 / 3000 / 6000 / 8000 transitions) as 1000-step episodes.
DEFAULT_DEMO_EPISODES = {"hopper": 2, "halfcheetah": 3, "walker2d": 6, "ant": 8, "inverted-pendulum": 10}
REPLAY_NOISE = 0.1  # std of the exploration noise added to the replay snapshots' actions
LQR_EXPERT_NOISE = 0.3  # std of the Gaussian action noise of the small task's expert (actions in [-3, 3])
# Bumped when the same task, kind and seed would give different arrays or reference returns; a cached
# dataset with an older number is stale. 2: episode counts keep the first episodes to start (1 kept the
# first to finish, biased toward short episodes: expert-demos and the measured random reference).
GENERATION_RULES = 2


def collect(task: str, policy: BatchPolicy, *, transitions: int | None = None,
            episodes: int | None = None, seed: int = 0, num_envs: int = 16,
            progress: bool = True, description: str | None = None) -> dict[str, np.ndarray]:
    """Roll ``policy`` out until ``transitions`` rows (or ``episodes`` whole episodes) are collected."""
    if (transitions is None) == (episodes is None):
        raise ValueError("give exactly one of transitions or episodes")
    info = get_task(task)
    horizon = info.max_episode_steps
    envs = [make_env(info) for _ in range(num_envs)]
    obs = np.stack([env.reset(seed=seed * 10_007 + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    # One preallocated episode buffer per env; finished episodes are copied out whole.
    episode = {"observations": np.zeros((num_envs, horizon, info.obs_dim), np.float32),
               "actions": np.zeros((num_envs, horizon, info.act_dim), np.float32),
               "rewards": np.zeros((num_envs, horizon), np.float32),
               "next_observations": np.zeros((num_envs, horizon, info.obs_dim), np.float32),
               "terminals": np.zeros((num_envs, horizon), bool),
               "timeouts": np.zeros((num_envs, horizon), bool)}
    length = np.zeros(num_envs, int)
    # episode i of the run is the i-th to start; with an episode count only the first N are run
    index = np.arange(num_envs)
    started = num_envs
    finished: list[tuple[int, dict[str, np.ndarray]]] = []
    total = 0
    target = transitions if transitions is not None else episodes
    with progress_bar(description or f"{info.name} rollouts", total=target, enabled=progress,
                      unit="transitions" if transitions is not None else "episodes") as advance:
        while (total if transitions is not None else len(finished)) < target:
            actions = np.asarray(policy(obs), np.float32)
            for i, env in enumerate(envs):
                if episodes is not None and index[i] >= episodes:
                    continue  # idle: the first N episodes are already under way
                nxt, reward, terminated, truncated, _ = env.step(actions[i])
                t = length[i]
                row = (obs[i], actions[i], reward, nxt, terminated, truncated and not terminated)
                for key, value in zip(D4RL_KEYS, row):
                    episode[key][i, t] = value
                length[i] += 1
                if terminated or truncated:
                    finished.append((int(index[i]), {k: v[i, :length[i]].copy() for k, v in episode.items()}))
                    total += length[i]
                    advance(int(length[i]) if transitions is not None else 1)
                    length[i] = 0
                    index[i], started = started, started + 1
                    nxt, _ = env.reset()
                obs[i] = nxt
    for env in envs:
        env.close()
    if episodes is not None:
        finished.sort(key=lambda item: item[0])
    arrays = {k: np.concatenate([e[k] for _, e in finished]) for k in D4RL_KEYS}
    if transitions is not None:
        arrays = {k: v[:transitions] for k, v in arrays.items()}
    if not (arrays["terminals"][-1] or arrays["timeouts"][-1]):
        arrays["timeouts"][-1] = True  # the budget cut this episode: mark it like a time limit
    return arrays


def _lqr_expert(seed: int) -> BatchPolicy:
    """The small task's expert: the scripted LQR controller with N(0, 0.3^2) action noise.

    A stochastic expert like the SAC experts of the locomotion tasks: noise-free LQR
    demonstrations stay within ~0.005 of the upright pose, too narrow for BC to generalise from
    (measured: BC from them balances for 2-66 steps; with the noise, for all 1000).
    """
    from drorl.envs.scripted import lqr_controller

    controller = lqr_controller("inverted-pendulum")
    return with_noise(controller, LQR_EXPERT_NOISE, controller.low, controller.high, seed)


def behaviour_policy(task: str, kind: str, seed: int) -> tuple[BatchPolicy, str]:
    """The policy of ``kind`` ("random", "expert", "medium") for ``task`` and its id."""
    if kind == "random":
        return random_policy(task, seed), "uniform-random"
    found = zoo.entries(task, kind)
    if found:
        return zoo.load_policy(found[-1].id, stochastic=True, seed=seed), found[-1].id
    if task == "inverted-pendulum" and kind == "expert":
        return _lqr_expert(seed), f"lqr+gaussian({LQR_EXPERT_NOISE})"
    raise DrorlError(f"the behaviour-policy zoo has no {kind} policy for {task!r} "
                     f"(train one: see docs/zoo.md); kinds available without it: random"
                     + (", expert, expert-demos" if task == "inverted-pendulum" else ""))


def mean_return(task: str, policy: BatchPolicy, episodes: int, seed: int) -> float:
    arrays = collect(task, policy, episodes=episodes, seed=seed, num_envs=min(episodes, 16), progress=False)
    return float(Dataset.from_arrays(arrays).episode_returns.mean())


def reference_returns(task: str, seed: int = 12345) -> dict[str, object]:
    """Random and expert reference returns for normalised scores, and where they come from.

    The expert reference is the zoo expert's manifest return (ignored if it is not above the random
    return), else the scripted expert's measured return (small task), else D4RL's constant.
    """
    info = get_task(task)
    random_ret = mean_return(info.name, random_policy(info.name, seed), 10, seed)
    experts = [e for e in zoo.entries(info.name, "expert") if e.return_mean > random_ret]
    if experts:
        return {"ref_min_score": random_ret, "ref_max_score": experts[-1].return_mean,
                "ref_source": f"random: measured (10 episodes); expert: zoo {experts[-1].id} manifest"}
    if info.name == "inverted-pendulum":
        return {"ref_min_score": random_ret, "ref_max_score": mean_return(info.name, _lqr_expert(seed), 10, seed),
                "ref_source": "random and LQR expert: measured (10 episodes each)"}
    return {"ref_min_score": random_ret, "ref_max_score": info.d4rl_ref_max,
            "ref_source": "random: measured (10 episodes); expert: D4RL constant"}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in D4RL_KEYS}


def _replay(task: str, transitions: int, seed: int, num_envs: int, progress: bool) -> tuple[dict, str]:
    """Snapshots from the start of training up to the medium policy, each for an equal share."""
    snapshots = zoo.entries(task, "replay") + zoo.entries(task, "medium")
    if not snapshots:
        raise DrorlError(f"the behaviour-policy zoo has no replay snapshots for {task!r}")
    if get_task(task).discrete:  # Gaussian noise on an action index would bias it toward the lower action
        raise DrorlError(f"medium-replay adds Gaussian action noise and needs continuous actions; {task} is "
                         "discrete (use mixed or medium-expert, or subsample / confine for coverage)")
    low, high = action_bounds(task)
    shares = np.diff(np.linspace(0, transitions, len(snapshots) + 1).round().astype(int))
    parts = []
    for i, (entry, share) in enumerate(zip(snapshots, shares)):
        policy = with_noise(zoo.load_policy(entry.id, seed=seed + i), REPLAY_NOISE, low, high, seed + i)
        parts.append(collect(task, policy, transitions=int(share), seed=seed + i, num_envs=num_envs,
                             progress=progress, description=f"{task} replay {i + 1}/{len(snapshots)}"))
    return _concat(parts), "+".join(e.id for e in snapshots)


def generate(task: str, kind: str, *, transitions: int | None = None, episodes: int | None = None,
             seed: int = 0, num_envs: int = 16, progress: bool = True) -> Dataset:
    """Make a dataset of ``kind`` for ``task`` (``transitions`` rows, or ``episodes`` for expert-demos)."""
    info = get_task(task)
    if kind not in ALL_KINDS:
        raise DrorlError(f"unknown dataset kind {kind!r}; expected one of {', '.join(ALL_KINDS)}")
    transitions = transitions or DEFAULT_TRANSITIONS
    notes = ""

    def rollout(policy_kind: str, n: int, part_seed: int) -> tuple[dict, str]:
        policy, policy_id = behaviour_policy(info.name, policy_kind, part_seed)
        return collect(info.name, policy, transitions=n, seed=part_seed, num_envs=num_envs,
                       progress=progress, description=f"{info.name} {policy_kind}"), policy_id

    if kind == "expert-demos":
        policy, policy_id = behaviour_policy(info.name, "expert", seed)
        arrays = collect(info.name, policy, episodes=episodes or DEFAULT_DEMO_EPISODES[info.name], seed=seed,
                         num_envs=num_envs, progress=progress)
    elif kind in ("random", "medium", "expert"):
        arrays, policy_id = rollout(kind, transitions, seed)
    elif kind in ("medium-expert", "mixed"):
        first, second = ("medium", "expert") if kind == "medium-expert" else ("random", "medium")
        half = transitions // 2
        (a, id_a), (b, id_b) = rollout(first, half, seed), rollout(second, transitions - half, seed + 1)
        arrays, policy_id = _concat([a, b]), f"{id_a}+{id_b}"
    else:  # medium-replay
        arrays, policy_id = _replay(info.name, transitions, seed, num_envs, progress)
        notes = ("stand-in for D4RL's replay buffer: rollouts of the zoo's training snapshots up to the "
                 f"medium policy, equal shares, exploration noise N(0, {REPLAY_NOISE}^2)")
    dataset = Dataset.from_arrays(arrays, obs_dim=info.obs_dim, act_dim=info.act_dim)
    returns = dataset.episode_returns
    metadata = {
        "env": info.name, "env_id": info.gym_id, "kind": kind, "seed": seed,
        "behavior_policy": policy_id,
        "behavior_return_mean": float(returns.mean()), "behavior_return_std": float(returns.std()),
        "generator": f"drorl {drorl.__version__}", "generation_rules": GENERATION_RULES, "corruptions": [],
        **reference_returns(info.name),
    }
    # the zoo files behind the rollouts and the expert reference: a later zoo makes this dataset stale
    used = set(policy_id.split("+")) | set(e.id for e in zoo.entries(info.name, "expert")[-1:])
    metadata["zoo_policies"] = {e.id: e.digest for e in zoo.manifest() if e.id in used}
    if notes:
        metadata["notes"] = notes
    return Dataset(**dataset.arrays(), metadata=metadata)
