"""The behaviour-policy zoo: small msgpack policy files shipped inside the package, and a manifest.

A policy file holds an online algorithm's acting parameters and what is needed to run them through
that algorithm's ``act`` (algorithm, its config, task, input/output scaling); it is read with msgpack
only, never pickle. The manifest lists every
policy with its task, kind (expert, medium, replay snapshot), measured return (mean and std over
10 stochastic episodes), training steps, seed and the command that trained it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from drorl import algos, checkpoint
from drorl.algos.base import Scaler, Spec, config_from_dict
from drorl.envs import TASKS
from drorl.errors import DrorlError, brief
from drorl.io_utils import write_bytes_atomic, write_json_atomic

POLICY_FORMAT = "drorl-policy/1"
ZOO_DIR = Path(str(resources.files("drorl.zoo")))


def zoo_dir() -> Path:
    """The zoo in use: ``$DRORL_ZOO`` if set (a zoo of your own), else the one shipped in the package."""
    return Path(os.environ["DRORL_ZOO"]) if os.environ.get("DRORL_ZOO") else ZOO_DIR


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One manifest row. ``order`` sorts the replay snapshots of a task by training step."""

    id: str
    task: str
    kind: str
    file: str
    return_mean: float
    return_std: float
    episodes: int
    training_steps: int
    seed: int
    algorithm: str
    command: str
    order: int = 0

    @property
    def path(self) -> Path:
        return zoo_dir() / "policies" / self.file

    @property
    def digest(self) -> str:
        """SHA-256 (first 16 hex digits) of the policy file: datasets record it to detect a changed zoo."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]


def manifest_path(directory: Path | None = None) -> Path:
    return (directory or zoo_dir()) / "manifest.json"


def manifest(directory: Path | None = None) -> list[ZooEntry]:
    path = manifest_path(directory)
    if not path.is_file():
        return []
    return [ZooEntry(**row) for row in json.loads(path.read_text())["policies"]]


def entries(task: str, kind: str | None = None) -> list[ZooEntry]:
    rows = [e for e in manifest() if e.task == task and (kind is None or e.kind == kind)]
    return sorted(rows, key=lambda e: e.order)


def get(policy_id: str) -> ZooEntry:
    for entry in manifest():
        if entry.id == policy_id:
            return entry
    known = ", ".join(e.id for e in manifest()) or "none yet"
    raise DrorlError(f"zoo policy {policy_id!r} not found; available: {known}")


def changed_policies(recorded: dict[str, str]) -> list[str]:
    """The ids in ``recorded`` ({policy id: digest}, from a dataset's metadata) whose zoo file is gone or differs."""
    current = {e.id: e for e in manifest()}
    return [pid for pid, digest in recorded.items() if pid not in current or current[pid].digest != digest]


def write_manifest(rows: list[ZooEntry], directory: Path | None = None) -> None:
    write_json_atomic(manifest_path(directory), {"policies": [dataclasses.asdict(r) for r in rows]})


def save_policy(path: Path, *, algorithm: str, task: str, config: Any, params: Any, scaler: Any,
                epsilon: float = 0.0) -> Path:
    """Write the acting parameters of an online algorithm's state (SAC's actor, DQN's Q-network, acting
    epsilon-greedily) with the algorithm's config, as a policy file (msgpack, atomically)."""
    payload = {
        "format": POLICY_FORMAT, "algorithm": algorithm, "task": task, "epsilon": float(epsilon),
        "config": json.loads(json.dumps(dataclasses.asdict(config))),
        "params": flax.serialization.to_state_dict(jax.device_get(params)),
        "scaler": {k: np.asarray(v) for k, v in flax.serialization.to_state_dict(scaler).items()},
    }
    write_bytes_atomic(path, flax.serialization.msgpack_serialize(payload))
    return path


def _policy_config(algo: Any, raw: dict, path: Path) -> Any:
    """The algorithm's config stored in a policy file; files written before configs were stored carry
    the network widths only (the shipped zoo), the rest at its defaults, which is what they trained with."""
    if "config" in raw:
        return config_from_dict(algo.Config, raw["config"], source=str(path))
    return algo.Config(hidden_dims=tuple(int(h) for h in raw["hidden_dims"]))


SCALER_FIELDS = ("obs_mean", "obs_std", "action_low", "action_high")


def read_policy_file(path: Path) -> dict[str, Any]:
    """A policy file's content, checked enough that loading it cannot fail in another way than a one-line
    error naming the file: format, algorithm, task, exploration rate, scaling arrays against the task."""
    try:
        raw = flax.serialization.msgpack_restore(path.read_bytes())
    except Exception as exc:  # msgpack and flax raise many types on damaged bytes; none is a bug here
        raise DrorlError(f"{path}: not a readable policy file ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("format"), str) or raw["format"] != POLICY_FORMAT:
        raise DrorlError(f"{path}: not a drorl policy file (expected format {POLICY_FORMAT!r})")
    problem = _policy_problem(raw)
    if problem:
        raise DrorlError(f"{path}: {problem}")
    return raw


def _policy_problem(raw: dict) -> str | None:
    """What makes a decoded policy file unusable, or None."""
    if not isinstance(raw.get("algorithm"), str) or raw["algorithm"] not in algos.names("online"):
        return (f"unknown policy algorithm {brief(raw.get('algorithm'))}; expected "
                f"{' or '.join(algos.names('online'))}")
    if not isinstance(raw.get("task"), str) or raw["task"] not in TASKS:
        return f"unknown task {brief(raw.get('task'))}; expected one of {', '.join(TASKS)}"
    if raw["algorithm"] == "dqn" and "epsilon" not in raw:
        return "a DQN policy needs its exploration rate 'epsilon'"
    epsilon = raw.get("epsilon", 0.0)
    if not (isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool) and 0.0 <= epsilon <= 1.0):
        return f"'epsilon' is {brief(epsilon)}; expected a number in [0, 1]"
    scaler = raw.get("scaler")
    if not (isinstance(scaler, dict) and set(scaler) == set(SCALER_FIELDS)):
        return f"'scaler' should hold exactly {', '.join(SCALER_FIELDS)}"
    for name in SCALER_FIELDS:
        value = scaler[name]
        if not (isinstance(value, np.ndarray) and value.ndim == 1 and value.size
                and np.issubdtype(value.dtype, np.floating) and np.isfinite(value).all()):
            return f"'scaler.{name}' should be a non-empty vector of finite floats"
    info = TASKS[raw["task"]]
    widths = (scaler["obs_mean"].size, scaler["obs_std"].size, scaler["action_low"].size, scaler["action_high"].size)
    if widths != (info.obs_dim, info.obs_dim, info.act_dim, info.act_dim):
        return (f"its scaling has widths {widths} (obs mean, obs std, action low, high); task {info.name} has "
                f"{info.obs_dim} observations and {info.act_dim} actions")
    if (scaler["obs_std"] <= 0).any() or (scaler["action_low"] >= scaler["action_high"]).any():
        return "its scaling needs obs_std > 0 and action_low < action_high"
    if info.discrete and (scaler["action_low"][0], scaler["action_high"][0]) != (0, info.num_actions - 1):
        return f"its action range should be the {info.num_actions} actions of task {info.name}"
    if "config" not in raw and not (isinstance(raw.get("hidden_dims"), list | np.ndarray)
                                    and all(isinstance(h, int | np.integer) and h > 0 for h in raw["hidden_dims"])):
        return "it has neither a 'config' nor the network widths 'hidden_dims'"
    if not isinstance(raw.get("params"), dict):
        return "'params' should be a tree of arrays"
    return None


@functools.lru_cache(maxsize=16)
def _template(algorithm: str, config: Any, obs_dim: int, act_dim: int, num_actions: int | None) -> Any:
    """A freshly initialised state to pour a policy file's parameters into (its shapes are what counts)."""
    algo = algos.get(algorithm, "online")
    spec = Spec(obs_dim, act_dim, -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32),
                np.zeros(obs_dim, np.float32), np.ones(obs_dim, np.float32), None, num_actions)
    return algo.init(config, spec, jax.random.PRNGKey(0))


class BehaviourPolicy:
    """A policy loaded from a policy file, acting on batches of observations through its algorithm's
    own ``act`` (``drorl.algos``).

    ``__call__(obs [N, obs_dim]) -> actions [N, act_dim]`` (NumPy). A SAC actor samples from its
    tanh-Gaussian; a DQN Q-network acts epsilon-greedily (its action index as one float column).
    Randomness comes from a key derived from ``seed`` and a call counter: rollouts are reproducible.
    """

    def __init__(self, path: str | Path, stochastic: bool = True, seed: int = 0):
        path = Path(path)
        raw = read_policy_file(path)
        self.task = raw["task"]
        self.algorithm = raw["algorithm"]
        algo = algos.get(self.algorithm, "online")
        scaler = Scaler(**{k: jnp.asarray(v, jnp.float32) for k, v in raw["scaler"].items()})
        self.act_dim = int(scaler.action_low.shape[0])
        self.obs_dim = int(scaler.obs_mean.shape[0])
        config = _policy_config(algo, raw, path)
        num_actions = None
        if self.algorithm == "dqn":  # the shipped policy explores at a fixed rate, the file's
            config = dataclasses.replace(config, epsilon_start=float(raw["epsilon"]),
                                         epsilon_end=float(raw["epsilon"]))
            num_actions = int(raw["scaler"]["action_high"][0]) + 1
        try:
            template = _template(self.algorithm, config, self.obs_dim, self.act_dim, num_actions)
        except Exception as exc:  # a config value no network can be built with (a negative width, ...)
            raise DrorlError(f"{path}: its {self.algorithm} config cannot be initialised "
                             f"({exc.__class__.__name__})") from None
        mismatch = checkpoint.tree_mismatch(raw["params"], flax.serialization.to_state_dict(
            algo.policy_params(template)))
        if mismatch:
            raise DrorlError(f"{path}: its parameters do not fit its {self.algorithm} config ({mismatch})")
        state = algo.with_policy_params(template, jax.tree_util.tree_map(jnp.asarray, raw["params"]))
        state = state.replace(scaler=scaler)
        self.stochastic = stochastic
        self._key = jax.random.PRNGKey(seed)
        self._calls = 0
        self._act = jax.jit(lambda obs, key: algo.act(state, obs, key, not stochastic))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        key = jax.random.fold_in(self._key, self._calls)
        self._calls += 1
        return np.asarray(self._act(jnp.asarray(obs, jnp.float32), key))


def load_policy(policy_id: str, stochastic: bool = True, seed: int = 0) -> BehaviourPolicy:
    """A zoo policy by id (``hopper-expert``) or a path to a policy file."""
    path = Path(policy_id)
    if not path.is_file():
        path = get(policy_id).path
    return BehaviourPolicy(path, stochastic=stochastic, seed=seed)
