"""The aggregate report of any set of finished runs (``drorl report RUN_DIRS...``).

A run directory contributes one normalised score per seed (nominal, and the robustness AUC when it was
evaluated along perturbation families) to a method on a task. The method is the run's label (set by a
benchmark or a sweep) or its algorithm, with the config fields that tell apart runs of the same algorithm;
the task is the evaluation task and the dataset. Run directories of the same method and task pool their
seeds, so a sweep's one-seed cells and a multi-seed run read the same way.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from drorl.aggregates import aggregate_estimates, aggregate_section
from drorl.benchmarks.common import SeedCurves, fmt
from drorl.errors import DrorlError
from drorl.health import report_lines
from drorl.io_utils import write_bytes_atomic, write_json_atomic
from drorl.plot import plot_score_profiles


@dataclasses.dataclass(frozen=True)
class RunScores:
    """One run directory's per-seed normalised scores and where they belong."""

    label: str
    algorithm: str
    config: dict[str, Any]
    task: str
    nominal: list[float]
    auc: dict[str, list[float]]


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DrorlError(f"{path}: missing; expected a finished run (drorl evaluate writes eval.json)") from None
    except ValueError as exc:
        raise DrorlError(f"{path}: not valid JSON ({exc})") from None


def read_run(run_dir: Path) -> RunScores:
    """The scores of a run directory from its eval.json (and config.json, when there is one)."""
    result = read_json(run_dir / "eval.json")
    record = read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
    algorithm = result.get("algorithm") or record.get("algorithm") or run_dir.name
    dataset = record.get("dataset", {}).get("id")
    try:
        task = f"{result['env']} / {Path(dataset).stem}" if dataset else result["env"]
        curves = SeedCurves.from_eval(result)
    except (KeyError, TypeError) as exc:
        raise DrorlError(f"{run_dir / 'eval.json'}: not what drorl evaluate writes ({exc!r} missing or "
                         "malformed)") from None
    return RunScores(label=result.get("label") or algorithm, algorithm=algorithm, config=record.get("config", {}),
                     task=task, nominal=curves.nominal, auc=curves.auc)


def finished_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories: each path that holds an eval.json, or else every directory under it that does (a
    sweep's or a benchmark's output directory)."""
    runs = []
    for path in map(Path, paths):
        found = [path] if (path / "eval.json").is_file() else sorted(p.parent for p in path.rglob("eval.json"))
        runs += found or [path]  # nothing finished there: read_run names the missing file
    return runs


def flat_fields(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config fields as ``{"policy.lr": "0.001"}``."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_fields(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value)
    return out


def method_names(runs: Sequence[RunScores]) -> list[str]:
    """Each run's method: its label, followed by the config fields in which runs of that label on the same
    task differ (two runs of one label on one task with different configs are different methods)."""
    fields = [flat_fields(run.config) for run in runs]
    differing: dict[str, set[str]] = {}
    for run in runs:
        peers = [f for r, f in zip(runs, fields) if (r.label, r.task) == (run.label, run.task)]
        keys = {k for f in peers for k in f if len({p.get(k) for p in peers}) > 1}
        differing.setdefault(run.label, set()).update(keys)
    return [" ".join([run.label, *(f"{k}={own.get(k, '-')}" for k in sorted(differing[run.label]))])
            for run, own in zip(runs, fields)]


def pooled_scores(runs: Sequence[RunScores], methods: Sequence[str], score: str
                  ) -> dict[str, dict[str, list[float]]]:
    """{method: {task: per-seed scores of every run of that method on that task}}; ``score`` is "nominal"
    or "auc" (the AUC averaged over the run's families)."""
    pooled: dict[str, dict[str, list[float]]] = {}
    for run, method in zip(runs, methods):
        values = run.nominal if score == "nominal" else np.mean(list(run.auc.values()), axis=0).tolist()
        pooled.setdefault(method, {}).setdefault(run.task, []).extend(values)
    return pooled


def score_matrices(pooled: dict[str, dict[str, list[float]]], tasks: Sequence[str]) -> dict[str, np.ndarray]:
    """{method: [runs, tasks]} over ``tasks``; a method must have as many runs on every task."""
    matrices = {}
    for method, by_task in pooled.items():
        counts = {task: len(by_task[task]) for task in tasks}
        if len(set(counts.values())) > 1:
            raise DrorlError(f"{method}: different numbers of seeds per task ("
                             + ", ".join(f"{t}: {n}" for t, n in counts.items())
                             + "); report runs with the same seeds on every task")
        matrices[method] = np.array([by_task[task] for task in tasks]).T
    return matrices


def common_tasks(pooled: dict[str, dict[str, list[float]]]) -> tuple[list[str], list[str]]:
    """The tasks every method ran (in order of appearance), and those left out."""
    every = list(dict.fromkeys(task for by_task in pooled.values() for task in by_task))
    shared = [task for task in every if all(task in by_task for by_task in pooled.values())]
    return shared, [task for task in every if task not in shared]


def per_task_table(pooled: dict[str, dict[str, list[float]]], tasks: Sequence[str]) -> list[str]:
    return ["| method | " + " | ".join(tasks) + " |", "|---" * (1 + len(tasks)) + "|",
            *(f"| {method} | " + " | ".join(fmt(by_task[t]) for t in tasks) + " |" for method, by_task in pooled.items())]


def improvement_pairs(methods: Sequence[str], reference: str | None) -> list[tuple[str, str]]:
    """(reference, other) for every other method, or every pair in order when no reference is named."""
    if reference is None:
        return [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]]
    if reference not in methods:
        raise DrorlError(f"--reference {reference}: no such method; expected one of {', '.join(methods)}")
    return [(reference, m) for m in methods if m != reference]


def estimates_json(matrices: dict[str, np.ndarray]) -> dict[str, dict[str, dict[str, float]]]:
    return {method: {name: dataclasses.asdict(e) for name, e in aggregate_estimates(m).items()}
            for method, m in matrices.items()}


def count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def write_run_report(run_dirs: Sequence[str | Path], out: str | Path = "runs/report",
                     reference: str | None = None) -> Path:
    """Write, for the runs in ``run_dirs`` (``finished_runs``), ``out/report.md`` (aggregates with bootstrap intervals, probabilities of improvement, per-task
    scores), ``out/profiles.png`` (performance profiles of the nominal score) and ``out/aggregates.json``."""
    if not run_dirs:
        raise DrorlError("drorl report: expected at least one run directory")
    out = Path(out)
    runs = [read_run(d) for d in finished_runs(run_dirs)]
    methods = method_names(runs)
    names = list(dict.fromkeys(methods))
    nominal = pooled_scores(runs, methods, "nominal")
    tasks, left_out = common_tasks(nominal)
    if not tasks:
        raise DrorlError("drorl report: no task was run by every method; pass runs of the same tasks")
    pairs = improvement_pairs(names, reference)
    matrices = score_matrices(nominal, tasks)
    lines = ["# Aggregate report", "",
             f"{count(len(runs), 'run directory', 'run directories')}: {count(len(names), 'method')} on "
             f"{count(len(tasks), 'task')}. Scores are normalised "
             "(0 = random, 100 = the expert reference of each run's eval.json), one per seed.", ""]
    if left_out:
        lines += [f"Left out (not run by every method): {', '.join(left_out)}.", ""]
    lines += ["## Nominal score", "", *aggregate_section(matrices, pairs, "the nominal score"),
              "![performance profiles](profiles.png)", ""]
    families = {tuple(run.auc) for run in runs}
    summary = {"tasks": tasks, "nominal": estimates_json(matrices)}
    if len(families) == 1 and families != {()}:
        names_of_families = ", ".join(next(iter(families)))
        auc = score_matrices(pooled_scores(runs, methods, "auc"), tasks)
        lines += [f"## Robustness: AUC averaged over {names_of_families}", "",
                  *aggregate_section(auc, pairs, f"the AUC averaged over {names_of_families}")]
        summary["auc"] = estimates_json(auc)
    lines += ["## Per task", "", "Mean ± 95 % Student-t half-width over seeds, nominal score.", "",
              *per_task_table(nominal, tasks), ""]
    lines += report_lines((f"{Path(d)} ({run.label} on {run.task})", d) for run, d in zip(runs, run_dirs))
    plot_score_profiles(matrices, out / "profiles.png", title="performance profiles (nominal score)")
    write_json_atomic(out / "aggregates.json", summary)
    report = out / "report.md"
    write_bytes_atomic(report, "\n".join(lines).encode())
    return report
