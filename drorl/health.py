"""Training health: non-finite metrics and parameters stop a run; declared diagnostics that drift
without levelling off are flagged.

An algorithm may declare ``DIAGNOSTICS = {metric: what its drifting means}``. After every chunk the
loops test each declared metric's recent history (per seed) with ``drift``: a least-squares line over
the last half of the chunks logged so far, which must (1) have a significant slope, (2) move the
metric by a large fraction of its own scale over the window, and (3) not be levelling off (a
quadratic fit's slope at the window's end keeps at least half the line's). A converging metric fails
(3), a noisy flat one fails (1) or (2). Each drifting (metric, seed) is warned about once per run, as
a record in metrics.jsonl that reports read back.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from drorl.errors import DrorlError

# the trend test needs this many chunks; it then looks at the last half of them, so that early
# transients (a dual variable leaving its initial value) are never part of the window
MIN_CHUNKS = 20
# two-sided p-value of the slope: tested after every chunk for every declared metric and seed, so
# stricter than 0.05 to keep false alarms rare over a long run
P_VALUE = 1e-3
# |slope| x window length over max(|mean|, residual spread): a line from 0 gives 2/3 over the last
# half of the run whatever its rate, so 0.5 catches linear drift from rest and ignores small trends
# around a large level (Q at -1000 creeping to -1010)
RELATIVE_CHANGE = 0.5
# the quadratic fit's slope at the window's end over the line's slope: below this the metric is
# converging, not drifting
MIN_END_SLOPE_RATIO = 0.5

WARNING_KEY = "warning"


@dataclasses.dataclass(frozen=True)
class Drift:
    """A significant linear trend over ``steps`` (first, last): ``slope`` per step, from ``start`` to ``end``
    on the fitted line."""

    slope: float
    p_value: float
    steps: tuple[int, int]
    start: float
    end: float


def drift(steps: np.ndarray, values: np.ndarray) -> Drift | None:
    """The trend test on one metric's history (chunk ends and values, in order); None when it does
    not drift or the history is too short."""
    steps, values = np.asarray(steps, np.float64), np.asarray(values, np.float64)
    if len(values) < MIN_CHUNKS:
        return None
    window = len(values) // 2
    x, y = steps[-window:], values[-window:]
    centred = x - x.mean()
    slope, intercept = np.polyfit(centred, y, 1)
    if slope == 0:
        return None
    residual = y - (slope * centred + intercept)
    spread = np.sqrt(np.sum(residual**2) / (window - 2))
    standard_error = spread / np.sqrt(np.sum(centred**2))
    p_value = 0.0 if standard_error == 0 else 2 * stats.t.sf(abs(slope) / standard_error, window - 2)
    change = abs(slope) * (x[-1] - x[0])
    scale = max(abs(y.mean()), spread, np.finfo(np.float64).tiny)
    curvature = np.polyfit(centred, y, 2)[0]
    end_slope = slope + 2 * curvature * centred[-1]
    if p_value >= P_VALUE or change < RELATIVE_CHANGE * scale or end_slope / slope < MIN_END_SLOPE_RATIO:
        return None
    return Drift(float(slope), float(p_value), (int(x[0]), int(x[-1])),
                 float(intercept + slope * centred[0]), float(intercept + slope * centred[-1]))


def is_warning(record: Mapping[str, Any]) -> bool:
    return WARNING_KEY in record


@dataclasses.dataclass
class Monitor:
    """The declared diagnostics' history per (metric, seed) and the pairs already warned about; each
    chunk's records are added once, so a long online run costs one trend test per chunk, not a rescan."""

    watch: Mapping[str, str]  # metric -> what its drifting means (an algorithm's DIAGNOSTICS)
    series: dict[tuple[str, Any], list[tuple[int, float]]] = dataclasses.field(default_factory=dict)
    warned: set[tuple[str, Any]] = dataclasses.field(default_factory=set)

    def load(self, records: Iterable[Mapping[str, Any]]) -> set[tuple[str, Any]]:
        """Take in logged records (metrics.jsonl's, warnings included) without testing; the pairs updated."""
        updated = set()
        for record in records:
            if is_warning(record):
                self.warned.add((record["metric"], record.get("seed")))
                continue
            for metric in self.watch:
                if metric in record:
                    key = (metric, record.get("seed"))
                    self.series.setdefault(key, []).append((record["step"], record[metric]))
                    updated.add(key)
        return updated

    def add(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Take in a chunk's records; warning records for the pairs they update that now drift, each
        pair warned about once."""
        out = []
        for metric, seed in sorted(self.load(records) - self.warned, key=str):
            found = drift(*np.array(self.series[metric, seed]).T)
            if found is None:
                continue
            self.warned.add((metric, seed))
            out.append({"step": found.steps[1], **({} if seed is None else {"seed": seed}), WARNING_KEY: "drift",
                        "metric": metric, "meaning": self.watch[metric], "slope_per_step": found.slope,
                        "p_value": found.p_value, "window": list(found.steps), "from": found.start,
                        "to": found.end})
        return out


def describe(record: Mapping[str, Any]) -> str:
    """One line for a warning record."""
    seed = f" (seed {record['seed']})" if "seed" in record else ""
    first, last = record["window"]
    return (f"warning: {record['metric']}{seed} drifts without levelling off: {record['from']:.4g} -> "
            f"{record['to']:.4g} over steps {first:,}-{last:,} ({record['slope_per_step']:+.3g} per step, "
            f"p = {record['p_value']:.1g}); {record['meaning']}")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The complete records of a metrics.jsonl (a line cut by a kill is skipped; no file: none)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def run_warnings(run_dir: str | Path) -> list[str]:
    """The described warnings of a run directory's metrics.jsonl."""
    return [describe(r) for r in read_records(Path(run_dir) / "metrics.jsonl") if is_warning(r)]


def report_lines(runs: Iterable[tuple[str, str | Path]]) -> list[str]:
    """A markdown section listing the health warnings of labelled run directories (none: no lines)."""
    bullets = [f"- {label}: {text}" for label, run_dir in runs for text in run_warnings(run_dir)]
    if not bullets:
        return []
    return ["## Training health", "", "The health monitor flagged these runs (see their metrics.jsonl):", "",
            *bullets, ""]


def non_finite_metric(lines: list[Mapping[str, Any]]) -> tuple[str, Any] | None:
    """(metric, seed) of the first NaN or infinite value among logged lines, or None."""
    for line in lines:
        for key, value in line.items():
            if isinstance(value, float) and not math.isfinite(value):
                return key, line.get("seed")
    return None


@jax.jit
def _finite_flags(tree: Any) -> jax.Array:
    """One flag per floating-point leaf, stacked: the check after every chunk is one small transfer, not
    one per leaf."""
    return jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree) if _is_float(leaf)],
                       dtype=bool)


def _is_float(leaf: Any) -> bool:
    return bool(jnp.issubdtype(jnp.result_type(leaf), jnp.inexact))


def non_finite_parameter(tree: Any) -> str | None:
    """The path (``.policy.params['params']...``) of the first floating-point leaf of ``tree`` holding
    a NaN or an infinity, or None; checked on the device, one flag per leaf comes back (the paths are
    only spelled out when one is set)."""
    flags = np.asarray(_finite_flags(tree))
    if flags.all():
        return None
    paths = [jax.tree_util.keystr(path) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
             if _is_float(leaf)]
    return paths[int(np.argmin(flags))]


def require_finite(lines: list[Mapping[str, Any]], tree: Any, first_step: int, last_step: int,
                   kept: str) -> None:
    """Stop a run whose chunk of steps ``first_step``-``last_step`` produced a NaN or an infinity in a
    metric or a parameter; ``kept`` says which checkpoint remains (the bad state is never saved)."""
    bad = non_finite_metric(lines)
    if bad is not None:
        metric, seed = bad
        value = next(line[metric] for line in lines if line.get("seed") == seed)
        seed_text = "" if seed is None else f", seed {seed}"
        raise DrorlError(f"training diverged: metric {metric!r} is {value} in steps {first_step:,}-{last_step:,}"
                         f"{seed_text}; stopped before checkpointing; {kept}")
    path = non_finite_parameter(tree)
    if path is not None:
        raise DrorlError(f"training diverged: parameter {path} holds NaN or inf after steps "
                         f"{first_step:,}-{last_step:,}; stopped before checkpointing; {kept}")
