"""Building the zoo from an online training run: evaluate its actor snapshots, pick the expert,
the medium policy (about a third of the expert's return) and the replay snapshots before it,
write them as policy files and record their measured returns in the manifest.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from drorl import algos, checkpoint, zoo
from drorl.algos.base import config_from_dict
from drorl.errors import DrorlError
from drorl.evaluate import run_episodes
from drorl.io_utils import write_json_atomic
from drorl.online import OnlineSettings, online_spec

MANIFEST_EPISODES = 10
MEDIUM_FRACTION = 1 / 3  # the medium policy's return, as a fraction of the expert's
REPLAY_SNAPSHOTS = 5
SELECTION_EPISODES = 30  # snapshot returns are noisy (DQN especially): choose on more episodes than reported
# the best of many noisy means is mostly luck (ant's returns swing by +-1,300 with falls): the leaders of
# the first round are measured again, on more episodes, and the expert is the best of that second round
FINALISTS = 5
FINALIST_EPISODES = 100


def load_snapshots(run_dir: Path) -> tuple[dict[str, Any], list[int], Any, Any]:
    """config.json, the snapshot steps, and the actors (stacked on a leading axis) and scaler."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise DrorlError(f"{run_dir}: not a run directory (no config.json)")
    record = json.loads(config_path.read_text())
    if record.get("algorithm") not in ("sac", "dqn") or "online" not in record:
        raise DrorlError(f"{run_dir}: zoo policies come from drorl train-online sac or dqn runs")
    state = _template(record)
    paths = checkpoint.list_checkpoints(run_dir / "snapshots")
    if not paths:
        raise DrorlError(f"{run_dir}: no actor snapshots in {run_dir / 'snapshots'}")
    steps, actors = [], []
    scaler = state.scaler
    for path in paths:
        step, saved = checkpoint.load(path, {"actor": algos.get(record["algorithm"]).policy_params(state),
                                             "scaler": state.scaler})
        steps.append(step)
        actors.append(saved["actor"])
        scaler = saved["scaler"]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *actors)
    return record, steps, stacked, scaler


def _template(record: dict) -> Any:
    """A freshly initialised state of the run's algorithm and config (the shapes to load into)."""
    algo = algos.get(record["algorithm"])
    config = config_from_dict(algo.Config, record["config"])
    return algo.init(config, online_spec(record["env"]), jax.random.PRNGKey(0))


def evaluate_stacked(record: dict, actors: Any, scaler: Any, episodes: int, seed: int,
                     progress: bool = True) -> np.ndarray:
    """Mean stochastic return of every stacked actor: [S], all snapshots in one batched rollout."""
    algo = algos.get(record["algorithm"])
    # step far past any decay: a DQN snapshot explores with its final epsilon, as its policy file will
    template = _template(record).replace(scaler=scaler, step=jnp.asarray(2**30, jnp.int32))
    num = jax.tree_util.tree_leaves(actors)[0].shape[0]
    acting = jax.jit(jax.vmap(lambda actor, obs, key: algo.act(algo.with_policy_params(template, actor), obs, key,
                                                               False), in_axes=(0, 0, 0)))
    calls = [0]

    def policy(obs: np.ndarray) -> np.ndarray:
        keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), calls[0]), num)
        calls[0] += 1
        return np.asarray(acting(actors, jnp.asarray(obs), keys))

    return run_episodes(policy, num, record["env"], [None], episodes, seed=seed,
                        progress=progress)[:, 0].mean(axis=1)


def finalists(returns: np.ndarray, count: int) -> list[int]:
    """Indices of the ``count`` best returns (later snapshots first among ties), in training order."""
    order = sorted(range(len(returns)), key=lambda i: (-returns[i], -i))
    return sorted(order[:count])


def choose(steps: list[int], returns: np.ndarray, medium_fraction: float, replay_snapshots: int,
           expert: int | None = None) -> dict:
    """Indices of the expert (given, or the best return, latest among ties), the medium snapshot and
    the replay ones.

    Medium is a point on the way up, as D4RL's early-stopped policy: among the snapshots before
    training first passes half the expert's return, the one closest to ``medium_fraction`` x the
    expert's. Replay snapshots are evenly spaced among those before the medium one.
    """
    if expert is None:
        expert = int(len(returns) - 1 - np.argmax(returns[::-1]))
    above_half = [i for i in range(len(steps)) if returns[i] > 0.5 * returns[expert]]
    candidates = list(range(above_half[0])) if above_half and above_half[0] > 0 else [0]
    medium = min(candidates, key=lambda i: abs(returns[i] - medium_fraction * returns[expert]))
    earlier = [i for i in range(len(steps)) if steps[i] < steps[medium]]
    if earlier:
        picks = np.unique(np.linspace(0, len(earlier) - 1, min(replay_snapshots, len(earlier))).round().astype(int))
        replay = [earlier[j] for j in picks]
    else:
        replay = []
    return {"expert": expert, "medium": medium, "replay": replay}


def build(run_dir: str | Path, medium_fraction: float = MEDIUM_FRACTION, replay_snapshots: int = REPLAY_SNAPSHOTS,
          episodes: int = MANIFEST_EPISODES, zoo_dir: Path | None = None, seed: int = 0,
          selection_episodes: int = SELECTION_EPISODES, behaviour_epsilon: float | None = None,
          finalist_count: int = FINALISTS, finalist_episodes: int = FINALIST_EPISODES) -> list[zoo.ZooEntry]:
    """Write the zoo policies of one online run and replace its task's rows of the manifest.

    Snapshots are chosen on ``selection_episodes`` stochastic episodes each; the ``finalist_count``
    best are measured again on ``finalist_episodes`` (other seeds) and the expert is the best of those
    (0 finalists: the first round's best). The manifest reports ``episodes`` fresh ones (other seeds
    again) of every chosen policy file. Both rounds are kept in the run's ``zoo-selection.json``.
    ``behaviour_epsilon``: the exploration rate shipped DQN policies act with (default: the run's final one).
    """
    if finalist_count < 0 or (finalist_count > 0 and finalist_episodes < 1):
        raise DrorlError(f"--finalists {finalist_count} --finalist-episodes {finalist_episodes}: expected "
                         "finalists >= 0 and, with finalists, at least one episode")
    if behaviour_epsilon is not None and not 0.0 <= behaviour_epsilon <= 1.0:
        raise DrorlError(f"--behaviour-epsilon {behaviour_epsilon}: expected a probability in [0, 1]")
    run_dir = Path(run_dir)
    zoo_dir = zoo_dir or zoo.zoo_dir()
    record, steps, actors, scaler = load_snapshots(run_dir)
    task = record["env"]
    first = evaluate_stacked(record, actors, scaler, selection_episodes, seed=1000 + seed)
    returns, expert, leaders, second = first.copy(), None, [], np.zeros(0)
    if finalist_count > 0:
        leaders = finalists(first, finalist_count)
        second = evaluate_stacked(record, jax.tree_util.tree_map(lambda x: x[np.asarray(leaders)], actors), scaler,
                                  finalist_episodes, seed=3000 + seed)
        returns[leaders] = second  # the better estimates, also for the medium policy's third of the expert
        expert = leaders[int(len(leaders) - 1 - np.argmax(second[::-1]))]
    write_json_atomic(run_dir / "zoo-selection.json", {
        "first_round": {"episodes": selection_episodes, "steps": steps, "returns": first.tolist()},
        "finalists": {"episodes": finalist_episodes, "steps": [steps[i] for i in leaders], "returns": second.tolist()}})
    picks = choose(steps, returns, medium_fraction, replay_snapshots, expert=expert)
    chosen = [("expert", picks["expert"], 0), ("medium", picks["medium"], 0)]
    chosen += [("replay", i, k) for k, i in enumerate(picks["replay"])]
    online = record["online"]
    algorithm = record["algorithm"]
    template = _template(record)
    epsilon = _behaviour_epsilon(template) if behaviour_epsilon is None else float(behaviour_epsilon)
    build_options = {"medium-fraction": (medium_fraction, MEDIUM_FRACTION),
                     "replay-snapshots": (replay_snapshots, REPLAY_SNAPSHOTS),
                     "episodes": (episodes, MANIFEST_EPISODES), "finalists": (finalist_count, FINALISTS),
                     "finalist-episodes": (finalist_episodes, FINALIST_EPISODES)}
    command = training_command(record) + " --out RUN && drorl zoo build RUN" + "".join(
        f" --{name} {value:g}" for name, (value, default) in build_options.items() if value != default)
    if behaviour_epsilon is not None:
        command += f" --behaviour-epsilon {epsilon:g}"
    rows = []
    for kind, index, order in chosen:
        name = f"{task}-{kind}" + (f"-{order}" if kind == "replay" else "")
        path = zoo.save_policy(zoo_dir / "policies" / f"{name}.msgpack", algorithm=algorithm, task=task,
                               config=template.config,
                               params=jax.tree_util.tree_map(lambda x: x[index], actors), scaler=scaler,
                               epsilon=epsilon)
        measured = measure(path, task, episodes, seed=2000 + seed)
        rows.append(zoo.ZooEntry(id=name, task=task, kind=kind, file=path.name, return_mean=measured[0],
                                 return_std=measured[1], episodes=episodes, training_steps=steps[index],
                                 seed=online["seed"], algorithm=algorithm, command=command, order=order))
    kept = [row for row in zoo.manifest(zoo_dir) if row.task != task]
    zoo.write_manifest(kept + rows, zoo_dir)
    current = {row.file for row in rows}
    for stale in (zoo_dir / "policies").glob(f"{task}-*.msgpack"):  # files of this task's earlier build
        if stale.name not in current:
            stale.unlink()
    return rows


def training_command(record: dict) -> str:
    """The ``drorl train-online`` command that reproduces a run: every setting and config field that
    differs from its default, as options and ``--set`` overrides."""
    online = record["online"]
    parts = [f"drorl train-online {record['algorithm']} --env {record['env']} --steps {online['env_steps']}",
             f"--seed {online['seed']}"]
    defaults = OnlineSettings(env_steps=online["env_steps"])
    for field in dataclasses.fields(OnlineSettings):
        if field.name not in ("env_steps", "seed") and online.get(field.name) != getattr(defaults, field.name):
            parts.append(f"--{field.name.replace('_', '-')} {online[field.name]}")
    config_defaults = dataclasses.asdict(algos.get(record["algorithm"]).Config())
    for key, value in record["config"].items():
        default = config_defaults.get(key)
        if (list(default) if isinstance(default, tuple) else default) != value:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            parts.append(f"--set {key}={shown}")
    return " ".join(parts)


def _behaviour_epsilon(state: Any) -> float:
    """DQN policies act epsilon-greedily with the run's final exploration rate; SAC ones sample."""
    return float(state.config.epsilon_end) if hasattr(state.config, "epsilon_end") else 0.0


def measure(path: Path, task: str, episodes: int, seed: int) -> tuple[float, float]:
    """Mean and std of the stochastic return of a policy file: the manifest's numbers."""
    policy = zoo.BehaviourPolicy(path, stochastic=True, seed=seed)
    returns = run_episodes(lambda obs: policy(obs[0])[None], 1, task, [None], episodes, seed=seed,
                           progress=True)[0, 0]
    return float(returns.mean()), float(returns.std())
