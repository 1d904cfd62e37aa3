"""Dataset corruptions, each a pure transformation that records itself in ``metadata["corruptions"]``.

- Gaussian reward noise ``r + N(0, sigma^2)`` (sigma = 1 in the variance-regularisation paper);
- trajectory subsampling: keep a random fraction of whole episodes (coverage studies).
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
