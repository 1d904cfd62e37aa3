"""Aggregate scores over many tasks with stratified-bootstrap intervals (Agarwal et al. 2021,
"Deep RL at the edge of the statistical precipice").

A method's scores are a matrix ``[runs, tasks]`` (one normalised score per seed and task). The
statistics reduce the last two axes of ``[..., runs, tasks]`` arrays, so one call evaluates them on
every bootstrap replicate at once. A replicate resamples the runs of each task with replacement,
independently per task (the tasks are the strata), and an interval is the percentile interval of
the replicates. Everything is seeded: the same scores give the same report.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from drorl.errors import DrorlError

Statistic = Callable[[np.ndarray], np.ndarray]
REPLICATES = 2000


def score_matrix(scores: Sequence[Sequence[float]] | np.ndarray, name: str = "scores") -> np.ndarray:
    """``scores`` as a finite float matrix ``[runs, tasks]`` with at least one run and one task."""
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise DrorlError(f"{name}: expected a [runs, tasks] matrix with at least one of each; got shape "
                         f"{matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise DrorlError(f"{name}: every score must be finite")
    return matrix


def aggregate_mean(scores: np.ndarray) -> np.ndarray:
    """Mean over tasks of each task's mean over runs."""
    return scores.mean(axis=-2).mean(axis=-1)


def aggregate_median(scores: np.ndarray) -> np.ndarray:
    """Median over tasks of each task's mean over runs."""
    return np.median(scores.mean(axis=-2), axis=-1)


def interquartile_mean(scores: np.ndarray) -> np.ndarray:
    """Mean of the middle half of all runs x tasks scores pooled: floor(n / 4) are cut at each end
    (scipy.stats.trim_mean with proportion 0.25)."""
    pooled = np.sort(scores.reshape(*scores.shape[:-2], -1), axis=-1)
    cut = pooled.shape[-1] // 4
    return pooled[..., cut:pooled.shape[-1] - cut].mean(axis=-1)


def optimality_gap(scores: np.ndarray, threshold: float = 100.0) -> np.ndarray:
    """Mean shortfall below ``threshold`` over all runs x tasks (scores above it count as 0): how far a
    method is from the expert, unaffected by how far some runs overshoot it."""
    return np.maximum(threshold - scores, 0.0).mean(axis=(-2, -1))


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A point estimate and its bootstrap interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.1f} [{self.low:.1f}, {self.high:.1f}]"


def stratified_resamples(scores: np.ndarray, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """``[replicates, runs, tasks]``: each replicate draws every task's runs with replacement from that
    task's own runs."""
    runs, tasks = scores.shape
    rows = rng.integers(0, runs, size=(replicates, runs, tasks))
    return scores[rows, np.arange(tasks)]


def run_weights(runs: int, tasks: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """``[replicates, tasks, runs]``: how often each run is drawn in a stratified resample, over ``runs``
    (the same resampling as ``stratified_resamples``, as weights that sum to 1 per task)."""
    return rng.multinomial(runs, np.full(runs, 1.0 / runs), size=(replicates, tasks)) / runs


def percentile_interval(point: float, replicates: np.ndarray, level: float) -> Estimate:
    low, high = np.percentile(replicates, [50 * (1 - level), 50 * (1 + level)])
    return Estimate(float(point), float(low), float(high))


def bootstrap_estimate(statistic: Statistic, scores: np.ndarray, replicates: int = REPLICATES,
                       level: float = 0.95, seed: int = 0) -> Estimate:
    """``statistic`` of ``scores`` with its stratified-bootstrap percentile interval."""
    scores = score_matrix(scores)
    samples = stratified_resamples(scores, replicates, np.random.default_rng(seed))
    return percentile_interval(statistic(scores), statistic(samples), level)


def improvement_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[tasks, runs_x, runs_y]``: 1 where run i of x beats run j of y on a task, 1/2 on a tie, else 0."""
    a, b = x.T[:, :, None], y.T[:, None, :]
    return (a > b) + 0.5 * (a == b)


def probability_of_improvement(x: np.ndarray, y: np.ndarray, replicates: int = REPLICATES,
                               level: float = 0.95, seed: int = 0) -> Estimate:
    """P(X > Y): the chance that a run of method x beats a run of method y on a task drawn uniformly
    (the Mann-Whitney U statistic over runs_x x runs_y, ties counting 1/2, averaged over tasks), with
    its interval from resampling the runs of both methods within each task."""
    x, y = score_matrix(x, "x"), score_matrix(y, "y")
    if x.shape[1] != y.shape[1]:
        raise DrorlError(f"probability of improvement: x has {x.shape[1]} tasks and y {y.shape[1]}")
    wins = improvement_matrix(x, y)
    rng = np.random.default_rng(seed)
    wx = run_weights(x.shape[0], x.shape[1], replicates, rng)
    wy = run_weights(y.shape[0], y.shape[1], replicates, rng)
    resampled = np.einsum("bti,tij,btj->b", wx, wins, wy) / x.shape[1]
    return percentile_interval(wins.mean(axis=(1, 2)).mean(), resampled, level)


@dataclasses.dataclass(frozen=True)
class PerformanceProfile:
    """Fraction of runs scoring above each threshold tau (averaged over tasks), with its bootstrap band."""

    taus: np.ndarray
    fraction: np.ndarray
    low: np.ndarray
    high: np.ndarray


def performance_profile(scores: np.ndarray, taus: Sequence[float] | np.ndarray, replicates: int = REPLICATES,
                        level: float = 0.95, seed: int = 0) -> PerformanceProfile:
    """The run-score distribution: for each tau, the mean over tasks of the fraction of runs > tau."""
    scores = score_matrix(scores)
    taus = np.asarray(taus, dtype=np.float64)
    above = (scores[:, :, None] > taus).astype(np.float64)  # [runs, tasks, taus]
    weights = run_weights(*scores.shape, replicates, np.random.default_rng(seed))
    resampled = np.einsum("bti,itk->bk", weights, above) / scores.shape[1]
    low, high = np.percentile(resampled, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return PerformanceProfile(taus, above.mean(axis=0).mean(axis=0), low, high)


def profile_taus(scores: Mapping[str, np.ndarray], points: int = 101) -> np.ndarray:
    """An evenly spaced tau grid from the lowest to the highest score of every method."""
    pooled = np.concatenate([np.ravel(s) for s in scores.values()])
    return np.linspace(pooled.min(), pooled.max(), points)


AGGREGATES: dict[str, Statistic] = {"median": aggregate_median, "IQM": interquartile_mean, "mean": aggregate_mean,
                                    "optimality gap": optimality_gap}


def aggregate_estimates(scores: np.ndarray, replicates: int = REPLICATES, level: float = 0.95,
                        seed: int = 0) -> dict[str, Estimate]:
    """Median, IQM, mean and optimality gap of one method, each with its bootstrap interval (one
    resample shared by the four, so they are computed on the same replicates)."""
    scores = score_matrix(scores)
    samples = stratified_resamples(scores, replicates, np.random.default_rng(seed))
    return {name: percentile_interval(stat(scores), stat(samples), level) for name, stat in AGGREGATES.items()}


def aggregate_table(scores: Mapping[str, np.ndarray], replicates: int = REPLICATES, level: float = 0.95,
                    seed: int = 0) -> str:
    """A markdown table, one row per method: runs x tasks, then median, IQM, mean and optimality gap
    (below 100), each ``value [low, high]`` with its stratified-bootstrap interval."""
    lines = ["| method | runs x tasks | " + " | ".join(AGGREGATES) + " |", "|---" * (2 + len(AGGREGATES)) + "|"]
    for method, matrix in scores.items():
        matrix = score_matrix(matrix, method)
        estimates = aggregate_estimates(matrix, replicates, level, seed)
        lines.append(f"| {method} | {matrix.shape[0]} x {matrix.shape[1]} | "
                     + " | ".join(str(e) for e in estimates.values()) + " |")
    return "\n".join(lines)


def improvement_table(scores: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]],
                      replicates: int = REPLICATES, level: float = 0.95, seed: int = 0) -> str:
    """A markdown table of P(X > Y) with its bootstrap interval, one row per pair (X, Y) of methods
    (0.5: neither tends to beat the other)."""
    lines = ["| X | Y | P(X > Y) |", "|---|---|---|"]
    for x, y in pairs:
        for method in (x, y):
            if method not in scores:
                raise DrorlError(f"probability of improvement: no method {method!r}; expected one of "
                                 f"{', '.join(scores)}")
        estimate = probability_of_improvement(scores[x], scores[y], replicates, level, seed)
        lines.append(f"| {x} | {y} | {estimate.value:.2f} [{estimate.low:.2f}, {estimate.high:.2f}] |")
    return "\n".join(lines)


def aggregate_section(scores: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]], what: str,
                      seed: int = 0) -> list[str]:
    """Report lines: the aggregate table of ``scores`` (``what`` names the score and the strata) and, when
    ``pairs`` are given, their probabilities of improvement."""
    lines = [f"Aggregates of {what} (runs x tasks; the interquartile mean (IQM) averages the middle half of "
             "all scores; optimality gap = mean shortfall below 100; [low, high] = 95 % stratified-bootstrap "
             f"interval, {REPLICATES} resamples of the runs within each task):", "", aggregate_table(scores, seed=seed)]
    if pairs:
        lines += ["", "Probability of improvement: the chance that a run of X scores above a run of Y on a task "
                  "drawn at random (ties count 1/2), with its 95 % bootstrap interval:", "",
                  improvement_table(scores, pairs, seed=seed)]
    return [*lines, ""]
