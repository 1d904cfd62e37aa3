"""Dataset corruptions, each a pure transformation that records itself in ``metadata["corruptions"]``.

- Gaussian reward noise ``r + N(0, sigma^2)`` (sigma = 1 in the variance-regularisation paper);
- trajectory subsampling: keep a random fraction of whole episodes (coverage studies);
- confinement to a region: every episode cut where its state first leaves a slab of the state space
  (coverage studies: the data then say nothing about states outside it).
"""

from __future__ import annotations

import numpy as np

from drorl.data.dataset import Dataset
from drorl.errors import DrorlError


def _with_record(dataset: Dataset, arrays: dict[str, np.ndarray], record: dict) -> Dataset:
    metadata = dict(dataset.metadata)
    metadata["corruptions"] = [*metadata.get("corruptions", []), record]
    return Dataset(**arrays, metadata=metadata)


def reward_noise(dataset: Dataset, sigma: float, seed: int = 0) -> Dataset:
    """Rewards become ``r + N(0, sigma^2)``, drawn from a generator seeded by ``seed``."""
    if not sigma >= 0:
        raise DrorlError(f"--reward-noise {sigma}: expected a standard deviation >= 0")
    rng = np.random.default_rng([seed, 0x7277])
    arrays = dataset.arrays()
    arrays["rewards"] = (dataset.rewards + rng.normal(0.0, sigma, dataset.rewards.shape)).astype(np.float32)
    return _with_record(dataset, arrays, {"type": "reward_noise", "sigma": float(sigma), "seed": seed})


def subsample_episodes(dataset: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """Keep ``round(fraction x episodes)`` whole episodes (at least one), chosen at random, in their order."""
    if not 0 < fraction <= 1:
        raise DrorlError(f"--subsample {fraction}: expected a fraction in (0, 1]")
    rng = np.random.default_rng([seed, 0x7375])
    keep = max(1, int(round(fraction * dataset.num_episodes)))
    chosen = np.sort(rng.choice(dataset.num_episodes, size=keep, replace=False))
    rows = np.isin(dataset.episode_index, chosen)
    arrays = {k: v[rows] for k, v in dataset.arrays().items()}
    record = {"type": "subsample_episodes", "fraction": float(fraction), "seed": seed,
              "episodes_kept": int(keep), "episodes_total": dataset.num_episodes}
    return _with_record(dataset, arrays, record)


def parse_region(text: str) -> tuple[int, float, float]:
    """``"DIM:LOW:HIGH"`` (``--confine 0:-0.5:0.5``) -> (dim, low, high)."""
    parts = text.split(":")
    try:
        dim, low, high = int(parts[0]), float(parts[1]), float(parts[2])
    except (ValueError, IndexError):
        raise DrorlError(f"--confine {text}: expected DIM:LOW:HIGH, e.g. 0:-0.5:0.5") from None
    if len(parts) != 3:
        raise DrorlError(f"--confine {text}: expected DIM:LOW:HIGH, e.g. 0:-0.5:0.5")
    return dim, low, high


def confine_to_region(dataset: Dataset, dim: int, low: float, high: float) -> Dataset:
    """Keep each episode up to (not including) its first observation with ``obs[dim]`` outside
    [low, high]; episodes that start outside are dropped. A cut episode's last kept row becomes a
    time-out (it bootstraps: the episode went on), and its next observation is the one that left."""
    if not 0 <= dim < dataset.obs_dim or not low < high:
        raise DrorlError(f"--confine {dim}:{low}:{high}: expected 0 <= DIM < {dataset.obs_dim} and LOW < HIGH")
    inside = (dataset.observations[:, dim] >= low) & (dataset.observations[:, dim] <= high)
    # a row is kept when no observation of its episode so far (itself included) lies outside
    outside_count = np.cumsum(~inside)
    before_episode = outside_count[dataset.episode_starts] - (~inside)[dataset.episode_starts]
    rows = outside_count == before_episode[dataset.episode_index]
    if not rows.any():
        raise DrorlError(f"--confine {dim}:{low}:{high}: every episode starts outside the region")
    cut = rows & ~np.append(rows[1:], False) & ~dataset.episode_ends
    arrays = dataset.arrays()
    arrays["timeouts"] = arrays["timeouts"] | cut
    arrays = {k: v[rows] for k, v in arrays.items()}
    kept_episodes = int(np.sum(rows[dataset.episode_starts]))
    record = {"type": "confine_to_region", "dim": int(dim), "low": float(low), "high": float(high),
              "rows_kept": int(rows.sum()), "rows_total": len(dataset), "episodes_kept": kept_episodes,
              "episodes_total": dataset.num_episodes, "episodes_cut": int(cut.sum())}
    return _with_record(dataset, arrays, record)
