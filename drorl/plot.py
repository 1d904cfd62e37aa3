"""Figures from run directories: robustness curves (eval.json) or learning curves (metrics.jsonl)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from drorl.aggregates import performance_profile, profile_taus  # noqa: E402
from drorl.errors import DrorlError  # noqa: E402
from drorl.health import is_warning  # noqa: E402
from drorl.io_utils import atomic_path  # noqa: E402


def _label(run_dir: Path, record: dict) -> str:
    algo = record.get("algorithm")
    return f"{algo} ({run_dir.name})" if algo and algo not in run_dir.name else run_dir.name


def save_figure(fig, out: Path) -> Path:
    """Write ``fig`` to ``out`` (.png, .svg or .pdf) atomically and close it."""
    suffix = out.suffix.lower()
    if suffix not in (".png", ".svg", ".pdf"):
        raise DrorlError(f"--out {out}: expected a .png, .svg or .pdf file")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=suffix[1:], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def plot_robustness(evals: list[tuple[str, dict]], out: Path, title: str | None = None) -> Path:
    """One panel per perturbation family: mean return over seeds against the perturbation value.

    The band is the standard deviation of the per-seed mean returns; the dashed line is nominal.
    """
    families = list(dict.fromkeys(f for _, e in evals for f in e.get("sweeps", {})))
    if not families:
        families = ["nominal"]
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.6), squeeze=False,
                             layout="constrained")
    for ax, family in zip(axes[0], families):
        for i, (label, result) in enumerate(evals):
            color = f"C{i}"
            if family == "nominal":
                nominal = result["nominal"]
                ax.bar(i, nominal["return_mean"], yerr=nominal["return_std"], color=color, label=label)
                continue
            points = result.get("sweeps", {}).get(family)
            if not points:
                continue
            x = np.array([p["value"] for p in points])
            per_seed = np.array([p["per_seed"] for p in points])
            mean, std = per_seed.mean(axis=1), per_seed.std(axis=1)
            ax.plot(x, mean, marker="o", ms=3, color=color, label=label)
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2)
            ax.axhline(result["nominal"]["return_mean"], color=color, ls="--", lw=0.8)
        ax.set_title(family)
        ax.set_xlabel("perturbation value" if family != "nominal" else "")
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title or f"{evals[0][1].get('env', '')}: robustness curves")
    return save_figure(fig, out)


def plot_grid2d(result: dict, out: Path) -> Path:
    """Heat map of eval.json's two-family grid (``grid2d``): the mean return over seeds of every cell,
    rows the first family's values (in grid order, upwards), columns the second's, each cell written in."""
    grid = result["grid2d"]
    (row_family, column_family), (rows, columns) = grid["families"], grid["values"]
    means = np.array([[np.mean(cell["per_seed"]) for cell in row] for row in grid["cells"]])
    fig, ax = plt.subplots(figsize=(2.2 + 0.8 * len(columns), 1.6 + 0.45 * len(rows)), layout="constrained")
    image = ax.imshow(means, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(columns)), [f"{v:.3g}" for v in columns])
    ax.set_yticks(range(len(rows)), [f"{v:.3g}" for v in rows])
    ax.set_xlabel(column_family)
    ax.set_ylabel(row_family)
    middle = (means.max() + means.min()) / 2
    for (i, j), value in np.ndenumerate(means):
        ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                color="black" if value > middle else "white")
    fig.colorbar(image, ax=ax, label="mean return over seeds")
    episodes, seeds = result["episodes"], len(result["nominal"]["per_seed"])
    ax.set_title(f"{result['env']}: {row_family} x {column_family} ({episodes} episode{'s' * (episodes != 1)} "
                 f"x {seeds} seed{'s' * (seeds != 1)})", fontsize=9)
    return save_figure(fig, out)


def plot_score_bars(groups: list[str], series: list[tuple[str, list[tuple[float, float]]]], out: Path,
                    title: str, ylabel: str = "normalised score") -> Path:
    """Grouped bars: one group per cell (e.g. dataset), one bar per series, error bars the given half-widths.

    ``series``: (label, [(mean, half_width) per group]).
    """
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(groups) * (0.5 + 0.4 * len(series))), 3.6),
                           layout="constrained")
    x = np.arange(len(groups))
    for i, (label, cells) in enumerate(series):
        means, halves = np.array(cells, dtype=np.float64).reshape(-1, 2).T
        ax.bar(x + (i - (len(series) - 1) / 2) * width, means, width, yerr=halves, capsize=3, color=f"C{i}",
               label=label)
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return save_figure(fig, out)


def plot_learning_curves(runs: list[tuple[str, list[dict]]], out: Path) -> Path:
    """Every logged metric against the step, averaged over seeds, one panel per metric."""
    metrics = sorted({k for _, lines in runs for line in lines for k in line
                      if k not in ("step", "seed", "seconds")})
    if not metrics:
        raise DrorlError("no metrics to plot in metrics.jsonl")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False,
                             layout="constrained")
    for ax, metric in zip(axes[0], metrics):
        for i, (label, lines) in enumerate(runs):
            by_step: dict[int, list[float]] = defaultdict(list)
            for line in lines:
                if metric in line:
                    by_step[line["step"]].append(line[metric])
            if by_step:
                steps = sorted(by_step)
                ax.plot(steps, [np.mean(by_step[s]) for s in steps], color=f"C{i}", label=label)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, out)


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    """Robustness curves when every run has eval.json, else learning curves from metrics.jsonl."""
    evals, curves = [], []
    for run_dir in map(Path, run_dirs):
        config = run_dir / "config.json"
        record = json.loads(config.read_text()) if config.is_file() else {}
        eval_path, metrics_path = run_dir / "eval.json", run_dir / "metrics.jsonl"
        if eval_path.is_file():
            evals.append((_label(run_dir, record), json.loads(eval_path.read_text())))
        if metrics_path.is_file():
            lines = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
            lines = [line for line in lines if not is_warning(line)]
            curves.append((_label(run_dir, record), lines))
        if not eval_path.is_file() and not metrics_path.is_file():
            raise DrorlError(f"{run_dir}: neither eval.json nor metrics.jsonl; expected a drorl run directory")
    if evals and len(evals) == len(run_dirs):
        return plot_robustness(evals, Path(out))
    return plot_learning_curves(curves, Path(out))


def plot_score_profiles(scores: Mapping[str, np.ndarray], out: Path, title: str = "performance profiles",
                        xlabel: str = "normalised score tau") -> Path:
    """Performance profiles of every method's scores [runs, tasks] on one tau grid spanning them all, plotted."""
    taus = profile_taus(scores)
    return plot_performance_profiles([(m, performance_profile(s, taus)) for m, s in scores.items()], out, title,
                                     xlabel)


def plot_performance_profiles(profiles: list[tuple[str, object]], out: Path, title: str = "performance profiles",
                              xlabel: str = "normalised score tau") -> Path:
    """Fraction of runs scoring above tau against tau, one line per method, its bootstrap band shaded.

    ``profiles``: (label, profile) with ``taus``, ``fraction``, ``low`` and ``high`` arrays
    (``drorl.aggregates.PerformanceProfile``).
    """
    fig, ax = plt.subplots(figsize=(5.0, 3.6), layout="constrained")
    for i, (label, profile) in enumerate(profiles):
        ax.plot(profile.taus, profile.fraction, color=f"C{i}", label=label)
        ax.fill_between(profile.taus, profile.low, profile.high, color=f"C{i}", alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return save_figure(fig, out)
