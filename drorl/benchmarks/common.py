"""What every benchmark suite shares: its jobs, how a profile runs (on the engine of ``drorl.execution``, as a
sweep's cells do), seed statistics, report tables."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Generic, Sequence, TypeVar

import numpy as np
from rich.console import Console
from scipy import stats

from drorl.errors import DrorlError
from drorl.execution import Backend, run_items
from drorl.plot import plot_score_profiles
from drorl.scores import normalized_score


def profile_lines(scores: dict[str, np.ndarray], path: Path, what: str) -> list[str]:
    """Plot the performance profiles of ``scores`` (method -> [runs, strata]) to ``path``; the report's lines."""
    plot_score_profiles(scores, path, title=f"performance profiles: {what}")
    return [f"Performance profiles of {what}: the fraction of runs scoring above tau, 95 % bootstrap bands.", "",
            f"![performance profiles]({path.name})", ""]


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


def difference_verdict(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, str]:
    """mean(a) - mean(b), the half-width of its Welch confidence interval, and "helps" / "hurts" when the
    interval excludes 0, else "ties" (also with fewer than two seeds on either side)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return diff, float("nan"), "ties"
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = np.sqrt(vx + vy)
    if se == 0:
        return diff, 0.0, "ties" if diff == 0 else ("helps" if diff > 0 else "hurts")
    dof = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    half = float(stats.t.ppf(0.5 + level / 2, dof) * se)
    verdict = "helps" if diff - half > 0 else "hurts" if diff + half < 0 else "ties"
    return diff, half, verdict


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test of mean(a) = mean(b) (1 with fewer than two seeds a side or
    no spread and no difference; 0 with no spread and a difference)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.size < 2 or y.size < 2:
        return 1.0
    if x.var(ddof=1) + y.var(ddof=1) == 0:
        return 1.0 if x.mean() == y.mean() else 0.0
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def holm_rejections(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected with the family-wise error rate held
    at ``alpha`` (sorted p_(1) <= ... <= p_(m); reject while p_(k) <= alpha / (m - k + 1))."""
    order = np.argsort(p_values, kind="stable")
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected


@dataclasses.dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its 95 % Welch half-width, the raw verdict and the Welch p-value."""

    diff: float
    half: float
    verdict: str
    p_value: float

    @classmethod
    def of(cls, a: Sequence[float], b: Sequence[float]) -> "Difference":
        return cls(*difference_verdict(a, b), welch_p_value(a, b))


def holm_verdicts(differences: Sequence[Difference], alpha: float = 0.05) -> list[str]:
    """Each difference's verdict after Holm's correction over all of them: a raw "helps"/"hurts" stays
    only when Holm rejects its null hypothesis, else it becomes "ties"."""
    rejected = holm_rejections([d.p_value for d in differences], alpha)
    return [d.verdict if keep else "ties" for d, keep in zip(differences, rejected)]


def resolvable_difference(seed_sd: float, seeds_per_arm: int, level: float = 0.95) -> float:
    """The smallest difference of two arms' means that a Welch interval at ``level`` excludes zero for, with
    ``seeds_per_arm`` seeds and a per-seed standard deviation ``seed_sd`` in each arm: t(df) s sqrt(2/n),
    df = 2(n - 1) (Welch's df for equal variances)."""
    n = seeds_per_arm
    return float(stats.t.ppf(0.5 + level / 2, 2 * (n - 1)) * seed_sd * np.sqrt(2.0 / n))


def pooled_seed_sd(groups: Sequence[Sequence[float]]) -> float:
    """The per-seed standard deviation pooled over cells (each cell's spread about its own mean)."""
    squares = sum(float(np.sum((np.asarray(g) - np.mean(g)) ** 2)) for g in groups)
    dof = sum(len(g) - 1 for g in groups)
    return float(np.sqrt(squares / dof)) if dof > 0 else float("nan")


def generated_dataset_path(out: Path, task: str, kind: str, transitions: int) -> Path:
    """Where a profile with its own (small) dataset size keeps that dataset: with the benchmark, not in the
    registry, named by its size so that a resized profile never reads the old data."""
    return Path(out) / "data" / f"{task}-{kind}-{transitions}.hdf5"


def prepare_datasets(tasks: Sequence[str], kinds: Sequence[str], transitions: int | None, out: Path) -> None:
    """Every dataset of the grid, once, before jobs (possibly parallel ones) read them: the registry's
    (``transitions=None``) or generated at that size beside the benchmark."""
    from drorl.data.generate import generate
    from drorl.data.hdf5 import write_hdf5
    from drorl.data.registry import resolve

    for task in tasks:
        for kind in kinds:
            if transitions is None:
                resolve(f"{task}-{kind}")
                continue
            path = generated_dataset_path(out, task, kind, transitions)
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                write_hdf5(generate(task, kind, transitions=transitions, seed=0, progress=False), path)


def load_dataset(task: str, kind: str, transitions: int | None, out: Path) -> tuple[Any, str]:
    """The dataset ``prepare_datasets`` made ready, and its id for the run record."""
    from drorl.data.hdf5 import read_hdf5
    from drorl.data.registry import resolve

    if transitions is None:
        dataset, name, _ = resolve(f"{task}-{kind}", progress=False)
        return dataset, name
    path = generated_dataset_path(out, task, kind, transitions)
    return read_hdf5(path), str(path)


def restrict_tasks(profile: Any, tasks: Sequence[str] | None) -> Any:
    """``profile`` with only ``tasks`` (kept in the profile's order), so that a long profile can be run one
    task at a time into the same output directory; ``None`` keeps every task."""
    if not tasks:
        return profile
    unknown = [t for t in tasks if t not in profile.tasks]
    if unknown:
        raise DrorlError(f"--tasks {','.join(unknown)}: not in this profile; expected some of "
                         f"{', '.join(profile.tasks)}")
    return dataclasses.replace(profile, tasks=tuple(t for t in profile.tasks if t in tasks))


def missing_tasks_note(profile: Any, full_profile: Any) -> list[str]:
    """Report lines saying which of the profile's tasks a ``--tasks`` run left out (none: no lines)."""
    missing = [t for t in full_profile.tasks if t not in profile.tasks]
    if not missing:
        return []
    return [f"Partial report: run with --tasks; not yet run here: {', '.join(missing)}.", ""]


def warn_if_other_run(run_dir: Path, record: dict[str, Any], keys: tuple[str, ...], config_defaults: dict) -> None:
    """Warn, naming config.json and the fields, when the finished run whose results are about to be reused
    recorded another run in ``keys``: a profile's settings or the data changed since (stale results), or an
    older drorl recorded the same config under other field names (still valid). A warning, not a refusal,
    because only a person can tell those apart. Printed for every such run (a Python warning would show the
    first only)."""
    import sys

    from drorl.checkpoint import require_same_run

    path = run_dir / "config.json"
    if path.is_file():
        try:
            require_same_run(path, json.loads(path.read_text()), record, keys, defaults={"config": config_defaults})
        except DrorlError as exc:
            sys.stderr.write(f"drorl: warning: {exc} -- its results are reused anyway\n")


def train_and_evaluate(algorithm: str, overrides: dict[str, Any], dataset: Any, dataset_id: str, task: str,
                       run_dir: Path, steps: int, seeds: Sequence[int], episodes: int,
                       families: Sequence[str] = (), label: str | None = None,
                       progress: bool = True, prepared_dir: Path | None = None) -> dict[str, Any]:
    """Train (or resume) ``algorithm`` on ``dataset`` for every seed at once, then evaluate on ``task``
    (nominal, and along each perturbation family): the content of the run's eval.json, which is
    reused, without loading the run, when it already exists. Training and evaluation show their own
    progress (rows under the benchmark's bar; plain lines in a log). ``prepared_dir``: where the
    algorithm's prepare step caches (a dynamics ensemble shared by the algorithms on one dataset)."""
    from drorl import algos
    from drorl.algos.base import replace_config
    from drorl.evaluate import evaluate_sweeps, write_eval_json
    from drorl.scores import reference_scores, spec_for
    from drorl.train import RunSettings, policy_fn, train

    algo = algos.get(algorithm, "offline")
    config = replace_config(algo.Config(), overrides, option="benchmark override")
    eval_path = Path(run_dir) / "eval.json"
    if eval_path.is_file():  # a finished run (possibly by an earlier drorl): nothing to train or evaluate
        record = {"algorithm": algorithm, "config": dataclasses.asdict(config), "seeds": list(seeds),
                  "dataset": {"hash": dataset.content_hash()}}
        warn_if_other_run(Path(run_dir), record, ("algorithm", "config", "seeds", "dataset.hash"),
                          dataclasses.asdict(algo.Config()))
        return json.loads(eval_path.read_text())
    settings = RunSettings(steps=steps, seeds=tuple(seeds), updates_per_call=min(1000, steps),
                           checkpoint_every=max(steps // 4, 1), env=task)
    states, run_dir = train(algorithm, dataset, run_dir, settings, config=config, spec=spec_for(dataset, task),
                            dataset_id=dataset_id, progress=progress, prepared_dir=prepared_dir,
                            description=f"{task} {label or algorithm} x{len(seeds)} seeds")
    ref_min, ref_max, source = reference_scores(dataset.metadata, task)
    result = evaluate_sweeps(policy_fn(algo, states), len(seeds), task, list(families), episodes,
                             ref_min=ref_min, ref_max=ref_max, reference_source=source, progress=progress)
    result.update(algorithm=algorithm, label=label or algorithm, seeds=list(seeds))
    write_eval_json(eval_path, result)
    return result


Setting = TypeVar("Setting")


@dataclasses.dataclass(frozen=True)
class Job(Generic[Setting]):
    """One run of a benchmark suite.

    Attributes:
        task: the task it trains on and is scored on (as the profile names it).
        label: the method's name in the report.
        algorithm: the registered algorithm.
        overrides: its config fields set for this run (dotted paths).
        run_dir: where it trains, resumes and leaves its evaluation.
        setting: the suite's own description of the run: its data, how long it trains, how it is evaluated.
    """

    task: str
    label: str
    algorithm: str
    overrides: dict[str, Any]
    run_dir: Path
    setting: Setting


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long an offline run trains and how it is evaluated.

    Attributes:
        steps: gradient steps.
        seeds: the seeds, trained at once.
        episodes: evaluation episodes per seed and grid point.
        families: the perturbation families swept in the evaluation (none: nominal dynamics only).
    """

    steps: int
    seeds: tuple[int, ...]
    episodes: int
    families: tuple[str, ...] = ()


def seeds_and_steps(profile: Any) -> str:
    """The console line's account of a profile's size, after its number of runs."""
    return f" x {len(profile.seeds)} seeds, {profile.steps:,} steps"


@dataclasses.dataclass(frozen=True)
class Suite:
    """A benchmark suite: how ``run`` runs one of its profiles.

    Attributes:
        name: its name on the command line (``drorl benchmark NAME``).
        profiles: its profiles by name.
        jobs_of: every job of a profile, given the output directory.
        run_job: trains (or resumes) and evaluates one job and returns its result; a top-level function, so
            that a worker process or a Ray task can run it; for a finished job it checks and reads the result.
        result_file: the file in a job's run directory whose presence says the job is finished.
        write_report: writes report.md and the rest from (profile name, profile, jobs, results, out).
        prepare: makes the profile's datasets ready, once, before jobs (parallel ones too) read them.
        size: the console line's account of a profile's size, after its number of runs.
        show: prints the results to the console before the report is written (None: nothing).
    """

    name: str
    profiles: dict[str, Any]
    jobs_of: Callable[[Any, Path], list[Job]]
    run_job: Callable[[Job], dict[str, Any]]
    write_report: Callable[[str, Any, list[Job], list[dict], Path], Path]
    result_file: str = "eval.json"
    prepare: Callable[[Any, Path], None] = lambda profile, out: None
    size: Callable[[Any], str] = seeds_and_steps
    show: Callable[[Console, Any, list[Job], list[dict]], None] | None = None

    def run(self, profile_name: str, out: Path, backend: Backend = Backend(), console: Console | None = None,
            tasks: Sequence[str] | None = None) -> Path:
        """Run every job of the profile (only ``tasks``, when given) into ``out`` on ``backend``, skipping
        finished jobs, and write the report; returns report.md."""
        if profile_name not in self.profiles:
            raise DrorlError(f"--profile {profile_name}: expected one of {', '.join(self.profiles)}")
        console = console or Console()
        profile = restrict_tasks(self.profiles[profile_name], tasks)
        out = Path(out)
        self.prepare(profile, out)
        jobs = self.jobs_of(profile, out)
        console.print(f"{self.name}/{profile_name}: {len(jobs)} runs{self.size(profile)}")
        results = run_items(jobs, self.run_job, backend, done=lambda job: (job.run_dir / self.result_file).is_file(),
                            description=f"{self.name}/{profile_name}")
        if self.show is not None:
            self.show(console, profile, jobs, results)
        return self.write_report(profile_name, profile, jobs, results, out)


@dataclasses.dataclass(frozen=True)
class SeedCurves:
    """Per-seed robustness summaries of one evaluation (eval.json), on normalised scores."""

    nominal: list[float]
    auc: dict[str, list[float]]
    worst: dict[str, list[float]]

    @classmethod
    def from_eval(cls, result: dict[str, Any]) -> "SeedCurves":
        lo, hi = result["reference"]["min"], result["reference"]["max"]
        norm = lambda r: normalized_score(np.asarray(r), lo, hi)  # noqa: E731
        auc, worst = {}, {}
        for family, points in result["sweeps"].items():
            per_seed = norm(np.array([p["per_seed"] for p in points]))  # [grid, seeds]
            auc[family] = per_seed.mean(axis=0).tolist()
            worst[family] = per_seed.min(axis=0).tolist()
        return cls(nominal=norm(result["nominal"]["per_seed"]).tolist(), auc=auc, worst=worst)
