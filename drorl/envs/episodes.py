"""What an episode came to, as one record for every loop: return, length, summed cost and the number of
steps that violated a safety constraint. Tasks without a cost signal report zero cost and violations; a
task with one puts it in the step's ``info["cost"]`` (positive on a violating step)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np


@dataclasses.dataclass
class EpisodeStats:
    episode_return: float = 0.0
    length: int = 0
    cost: float = 0.0
    violations: int = 0

    def add_step(self, reward: float, info: Mapping[str, Any]) -> None:
        cost = step_cost(info)
        self.episode_return += float(reward)
        self.length += 1
        self.cost += cost
        self.violations += int(cost > 0)


def step_cost(info: Mapping[str, Any]) -> float:
    """The step's safety cost (``info["cost"]``), 0 for tasks without one."""
    return float(info.get("cost", 0.0))


def summarize(episodes: Sequence[EpisodeStats]) -> dict[str, float]:
    """Means over finished episodes, as metric names (``episode_return``, ``episode_length``, ...)."""
    return {f"episode_{name}" if not name.startswith("episode_") else name:
            float(np.mean([getattr(e, name) for e in episodes])) for name in
            ("episode_return", "length", "cost", "violations")}
