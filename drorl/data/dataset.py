"""The in-memory offline dataset: D4RL keys, episode structure, validation, normalisation statistics."""

from __future__ import annotations

import dataclasses
import hashlib
from functools import cached_property
from typing import Any

import numpy as np

from drorl.errors import DrorlError

D4RL_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
_FLOAT_KEYS = ("observations", "actions", "rewards", "next_observations")
_MATRIX_KEYS = ("observations", "actions", "next_observations")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Transitions in the D4RL layout plus the structure every algorithm needs.

    Episodes end where ``terminals | timeouts`` (and at the last row, which may be a cut episode).
    ``next_actions[i]`` is the action recorded at row ``i + 1`` when the episode goes on there;
    ``has_next_action[i]`` says whether it does (false after a terminal or a time-out).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], metadata: dict[str, Any] | None = None,
                    source: str = "dataset", obs_dim: int | None = None,
                    act_dim: int | None = None) -> "Dataset":
        """Validate ``arrays`` (every D4RL key present, equal lengths, finite, right shapes) and build."""
        validated = validate_arrays(arrays, source, obs_dim=obs_dim, act_dim=act_dim)
        return cls(**validated, metadata=dict(metadata or {}))

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    @cached_property
    def episode_ends(self) -> np.ndarray:
        ends = self.terminals | self.timeouts
        ends = ends.copy()
        ends[-1] = True
        return ends

    @cached_property
    def episode_starts(self) -> np.ndarray:
        """Row index of the first transition of every episode."""
        return np.concatenate([[0], np.flatnonzero(self.episode_ends[:-1]) + 1]).astype(np.int64)

    @cached_property
    def episode_index(self) -> np.ndarray:
        """Episode id of every row."""
        return (np.cumsum(self.episode_ends) - self.episode_ends).astype(np.int64)

    @cached_property
    def time_steps(self) -> np.ndarray:
        """Time step of every row within its episode (0 at each episode's first transition)."""
        return np.arange(len(self.rewards), dtype=np.int64) - self.episode_starts[self.episode_index]

    @property
    def num_episodes(self) -> int:
        return int(self.episode_starts.shape[0])

    @cached_property
    def initial_observations(self) -> np.ndarray:
        return self.observations[self.episode_starts]

    @cached_property
    def initial_actions(self) -> np.ndarray:
        return self.actions[self.episode_starts]

    @cached_property
    def has_next_action(self) -> np.ndarray:
        return ~self.episode_ends

    @cached_property
    def next_actions(self) -> np.ndarray:
        nxt = np.zeros_like(self.actions)
        nxt[:-1] = self.actions[1:]
        nxt[~self.has_next_action] = 0.0
        return nxt

    @cached_property
    def episode_returns(self) -> np.ndarray:
        return np.bincount(self.episode_index, weights=self.rewards, minlength=self.num_episodes)

    @cached_property
    def episode_lengths(self) -> np.ndarray:
        return np.bincount(self.episode_index, minlength=self.num_episodes)

    def observation_stats(self, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation (floored at ``eps``) of the observations, for standardisation."""
        mean = self.observations.mean(axis=0, dtype=np.float64)
        std = self.observations.std(axis=0, dtype=np.float64)
        return mean.astype(np.float32), np.maximum(std, eps).astype(np.float32)

    def content_hash(self) -> str:
        """SHA-256 of the six D4RL arrays (shapes, dtypes and bytes): identifies the data a run saw."""
        digest = hashlib.sha256()
        for key in D4RL_KEYS:
            arr = np.ascontiguousarray(getattr(self, key))
            digest.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode())
            digest.update(arr.tobytes())
        return digest.hexdigest()

    def arrays(self) -> dict[str, np.ndarray]:
        return {key: getattr(self, key) for key in D4RL_KEYS}

    def select_episodes(self, episode_ids: np.ndarray) -> "Dataset":
        """A new dataset made of whole episodes, in the order given."""
        rows = np.concatenate([np.flatnonzero(self.episode_index == e) for e in episode_ids])
        arrays = {k: v[rows] for k, v in self.arrays().items()}
        return Dataset(**arrays, metadata=dict(self.metadata))

    def summary(self) -> dict[str, Any]:
        returns = self.episode_returns
        return {
            "transitions": len(self),
            "episodes": self.num_episodes,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
            "episode_length_mean": float(self.episode_lengths.mean()),
            "terminals": int(self.terminals.sum()),
            "timeouts": int(self.timeouts.sum()),
        }


def validate_arrays(arrays: dict[str, Any], source: str, obs_dim: int | None = None,
                    act_dim: int | None = None) -> dict[str, np.ndarray]:
    """Check the D4RL arrays and return them with canonical dtypes, or raise a one-line DrorlError."""
    missing = [k for k in D4RL_KEYS if k not in arrays]
    if missing:
        raise DrorlError(f"{source}: missing key {missing[0]!r}; expected keys {', '.join(D4RL_KEYS)}")
    out: dict[str, np.ndarray] = {}
    for key in D4RL_KEYS:
        arr = np.asarray(arrays[key])
        want_ndim = 2 if key in _MATRIX_KEYS else 1
        if key == "rewards" and arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != want_ndim:
            raise DrorlError(f"{source}: {key!r} has shape {arr.shape}; expected {want_ndim} dimensions")
        if key in _FLOAT_KEYS:
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise DrorlError(f"{source}: {key!r} has dtype {arr.dtype}; expected real numbers")
            arr = arr.astype(np.float32, copy=False)
            bad = ~np.isfinite(arr)
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise DrorlError(f"{source}: {key!r} has a non-finite value (NaN or inf) at row {row}")
        else:
            if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)
                    or np.issubdtype(arr.dtype, np.floating)):
                raise DrorlError(f"{source}: {key!r} has dtype {arr.dtype}; expected booleans")
            if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                raise DrorlError(f"{source}: {key!r} has a non-finite value (NaN or inf)")
            arr = arr.astype(bool, copy=False)
        out[key] = arr
    n = out["observations"].shape[0]
    if n == 0:
        raise DrorlError(f"{source}: 'observations' has 0 rows; expected at least one transition")
    for key in D4RL_KEYS[1:]:
        if out[key].shape[0] != n:
            raise DrorlError(f"{source}: {key!r} has {out[key].shape[0]} rows, 'observations' has {n}")
    if out["next_observations"].shape[1] != out["observations"].shape[1]:
        raise DrorlError(f"{source}: 'next_observations' has {out['next_observations'].shape[1]} columns, "
                         f"'observations' has {out['observations'].shape[1]}")
    if obs_dim is not None and out["observations"].shape[1] != obs_dim:
        raise DrorlError(f"{source}: 'observations' has {out['observations'].shape[1]} columns; "
                         f"the task expects {obs_dim}")
    if act_dim is not None and out["actions"].shape[1] != act_dim:
        raise DrorlError(f"{source}: 'actions' has {out['actions'].shape[1]} columns; the task expects {act_dim}")
    return out
