"""What every benchmark suite shares: jobs run locally or on Ray, seed statistics, report tables."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats

from drorl.errors import DrorlError


def mean_and_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval over seeds (0 for one seed)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()), 0.0
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)


def fmt(values: Sequence[float]) -> str:
    mean, half = mean_and_ci(values)
    return f"{mean:.1f} ± {half:.1f}"


def run_jobs(jobs: Sequence[Any], work: Callable[[Any], Any], backend: str = "local") -> list[Any]:
    """Run ``work(job)`` for every job: in this process one after another, or as Ray tasks."""
    if backend == "local":
        return [work(job) for job in jobs]
    if backend == "ray":
        try:
            import ray
        except ImportError:
            raise DrorlError("--backend ray needs Ray: pip install 'drorl[ray]'") from None
        if not ray.is_initialized():
            ray.init(ignore_reinit_error=True)
        remote = ray.remote(num_cpus=1)(work)
        return ray.get([remote.remote(job) for job in jobs])
    raise DrorlError(f"--backend {backend}: expected local or ray")


@dataclasses.dataclass(frozen=True)
class SeedCurves:
    """Per-seed robustness summaries of one evaluation (eval.json), on normalised scores."""

    nominal: list[float]
    auc: dict[str, list[float]]
    worst: dict[str, list[float]]

    @classmethod
    def from_eval(cls, result: dict[str, Any]) -> "SeedCurves":
        lo, hi = result["reference"]["min"], result["reference"]["max"]
        norm = lambda r: 100.0 * (np.asarray(r) - lo) / (hi - lo)  # noqa: E731
        auc, worst = {}, {}
        for family, points in result["sweeps"].items():
            per_seed = norm(np.array([p["per_seed"] for p in points]))  # [grid, seeds]
            auc[family] = per_seed.mean(axis=0).tolist()
            worst[family] = per_seed.min(axis=0).tolist()
        return cls(nominal=norm(result["nominal"]["per_seed"]).tolist(), auc=auc, worst=worst)
