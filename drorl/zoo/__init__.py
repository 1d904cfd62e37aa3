"""The behaviour-policy zoo: small msgpack policy files shipped inside the package, and a manifest.

A policy file holds an online algorithm's acting parameters and what is needed to run them through
that algorithm's ``act`` (algorithm, its config, task, input/output scaling); it is read with msgpack
only, never pickle. The manifest lists every
policy with its task, kind (expert, medium, replay snapshot), measured return (mean and std over
10 stochastic episodes), training steps, seed and the command that trained it.
"""

from __future__ import annotations

import dataclasses
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

from drorl import algos
from drorl.algos.base import Scaler, Spec, config_from_dict
from drorl.errors import DrorlError
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


class BehaviourPolicy:
    """A policy loaded from a policy file, acting on batches of observations through its algorithm's
    own ``act`` (``drorl.algos``).

    ``__call__(obs [N, obs_dim]) -> actions [N, act_dim]`` (NumPy). A SAC actor samples from its
    tanh-Gaussian; a DQN Q-network acts epsilon-greedily (its action index as one float column).
    Randomness comes from a key derived from ``seed`` and a call counter: rollouts are reproducible.
    """

    def __init__(self, path: str | Path, stochastic: bool = True, seed: int = 0):
        path = Path(path)
        try:
            raw = flax.serialization.msgpack_restore(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise DrorlError(f"{path}: not a readable policy file ({exc.__class__.__name__})") from None
        if not isinstance(raw, dict) or raw.get("format") != POLICY_FORMAT:
            raise DrorlError(f"{path}: not a drorl policy file (expected format {POLICY_FORMAT!r})")
        self.task = raw["task"]
        self.algorithm = raw["algorithm"]
        if self.algorithm not in algos.names("online"):
            raise DrorlError(f"{path}: unknown policy algorithm {self.algorithm!r}; expected "
                             f"{' or '.join(algos.names('online'))}")
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
        spec = Spec(self.obs_dim, self.act_dim, np.asarray(scaler.action_low), np.asarray(scaler.action_high),
                    np.asarray(scaler.obs_mean), np.asarray(scaler.obs_std), self.task, num_actions)
        template = algo.init(config, spec, jax.random.PRNGKey(0))
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
