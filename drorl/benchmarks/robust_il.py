"""The robust-imitation experiment (BE-DROIL's): BC, DR-BC and BE-DROIL trained on expert
demonstrations under nominal dynamics, evaluated along perturbation sweeps.

Profiles: ``quick`` (hopper; gravity and damping; 3 seeds), ``full`` (hopper, halfcheetah, walker2d,
ant; gravity, damping, stiffness, actuator range; 5 seeds; DR-BC's demonstration sizes), the
ablations ``rho-sweep``, ``balance``, ``divergence``, ``initial-states`` and ``time-weighting`` (BE-DROIL
variants, and BC weighted by BE-DROIL's time profile, on hopper), ``halfcheetah-rate`` (BC and BE-DROIL
at DR-BC's published halfcheetah learning rate), and ``smoke``
(seconds, for the tests). One fixed configuration per algorithm across tasks; DR-BC keeps its
published per-task radius and learning rate. Every run resumes: training from its checkpoints,
evaluation is skipped where eval.json exists.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from rich.console import Console

from drorl.aggregates import aggregate_section
from drorl.algos import be_droil
from drorl.benchmarks.common import (Difference, Job, Schedule, SeedCurves, Suite, fmt, holm_verdicts,
                                    missing_tasks_note, profile_lines, train_and_evaluate)
from drorl.data.generate import DEFAULT_DEMO_EPISODES
from drorl.data.registry import resolve
from drorl.health import report_lines
from drorl.io_utils import write_bytes_atomic, write_json_atomic
from drorl.plot import plot_robustness
from drorl.report import comparison_table

# DR-BC's published radius and learning rate per task.
DRBC_PUBLISHED = {"hopper": {"rho": 0.2}, "halfcheetah": {"rho": 0.3, "policy.lr": 1e-5}, "walker2d": {"rho": 0.5},
                  "ant": {"rho": 0.6}, "inverted-pendulum": {"rho": 0.2}}

Overrides = dict[str, Any] | Callable[[str], dict[str, Any]]
MAIN = (("BC", "bc", {}), ("DR-BC", "drbc", lambda task: DRBC_PUBLISHED[task]), ("BE-DROIL", "be-droil", {}))


@dataclasses.dataclass(frozen=True)
class Profile:
    tasks: tuple[str, ...]
    families: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    episodes: int
    variants: tuple[tuple[str, str, Overrides], ...] = MAIN
    demo_episodes: int | None = None  # None: DR-BC's sizes (drorl.data.generate.DEFAULT_DEMO_EPISODES)


FULL = Profile(("hopper", "halfcheetah", "walker2d", "ant"), ("gravity", "damping", "stiffness", "actuator_range"),
               (0, 1, 2, 3, 4), steps=100_000, episodes=10)

PROFILES = {
    "quickstart": Profile(("inverted-pendulum",), ("gravity", "damping", "stiffness", "action_noise"), (0, 1, 2),
                          steps=5000, episodes=5, demo_episodes=10),
    "smoke": Profile(("inverted-pendulum",), ("gravity",), (0, 1), steps=200, episodes=1, demo_episodes=2),
    "quick": Profile(("hopper",), ("gravity", "damping"), (0, 1, 2), steps=20_000, episodes=5),
    "full": FULL,
    "rho-sweep": Profile(("hopper",), ("gravity", "damping"), (0, 1, 2), steps=20_000, episodes=5,
                         variants=tuple((f"BE-DROIL rho={r}", "be-droil", {"rho": r}) for r in (0.1, 0.3, 0.5, 0.7))),
    "balance": Profile(("hopper",), ("gravity", "damping"), (0, 1, 2), steps=20_000, episodes=5,
                       variants=(("BE-DROIL", "be-droil", {}), ("BE-DROIL Q=0", "be-droil", {"balance": False}),
                                 ("BC", "bc", {}))),
    "divergence": Profile(("hopper",), ("gravity", "damping"), (0, 1, 2), steps=20_000, episodes=5,
                          variants=tuple((f"BE-DROIL {d}", "be-droil", {"divergence": d})
                                         for d in ("softtv", "kl", "chi2"))),
    # the initial-state distribution of the balance equation (be_droil.Config.initial_states)
    "initial-states": Profile(("hopper",), ("gravity", "damping"), (0, 1, 2), steps=20_000, episodes=5,
                              variants=(("BE-DROIL", "be-droil", {}),
                                        ("BE-DROIL s0=all", "be-droil", {"initial_states": "all"}),
                                        ("BC", "bc", {}))),
    # DR-BC's published halfcheetah rate (1e-5) given to BC and BE-DROIL too: how much of DR-BC's lead
    # there is its rate. Derived from the full profile, so that profile's runs (identical settings) can be
    # copied in rather than trained again.
    "halfcheetah-rate": dataclasses.replace(FULL, tasks=("halfcheetah",),
                                            variants=(("BC lr=1e-5", "bc", {"policy.lr": 1e-5}),
                                                      ("BE-DROIL lr=1e-5", "be-droil", {"policy.lr": 1e-5}), *MAIN)),
    # How the Q class shapes the adversary's room (issue 17): Q width, weight decay on Q, and rho, under the
    # discounted occupancy; BC as the reference. Diagnostics per variant come from the runs' metrics.
    "capacity": Profile(("hopper",), ("gravity", "damping"), (0, 1, 2), steps=20_000, episodes=5,
                        variants=(("BE-DROIL Q16", "be-droil", {"q_hidden_dims": (16, 16)}),
                                  ("BE-DROIL Q64", "be-droil", {"q_hidden_dims": (64, 64)}),
                                  ("BE-DROIL", "be-droil", {}),
                                  ("BE-DROIL wd=1e-2", "be-droil", {"q_weight_decay": 1e-2}),
                                  ("BE-DROIL rho=0.1", "be-droil", {"rho": 0.1}),
                                  ("BE-DROIL rho=0.7", "be-droil", {"rho": 0.7}),
                                  ("BE-DROIL uniform", "be-droil", {"occupancy": "uniform"}),
                                  ("BC", "bc", {}))),
    # BC weighted by the time profile alone that BE-DROIL's balance equation pins (its own gamma)
    "time-weighting": Profile(("hopper",), ("gravity", "damping"), (0, 1, 2), steps=20_000, episodes=5,
                              variants=(("BE-DROIL", "be-droil", {}),
                                        ("BC g^t", "bc", {"time_discount": be_droil.Config().gamma}),
                                        ("BC", "bc", {}))),
}


@dataclasses.dataclass(frozen=True)
class Setting:
    """A robust-imitation run's data and schedule. Attributes: dataset, a registry name or the path of the
    profile's own demonstrations; schedule, the profile's steps, seeds, episodes and families."""

    dataset: str
    schedule: Schedule


def _dataset_source(profile: Profile, task: str, out: Path) -> str:
    """The registry's demonstrations at the spec's size; a profile's own size is kept with the benchmark
    (so a small smoke dataset never shadows the registry's)."""
    if profile.demo_episodes in (None, DEFAULT_DEMO_EPISODES[task]):
        return f"{task}-expert-demos"
    return str(out / "data" / f"{task}-expert-demos-{profile.demo_episodes}.hdf5")


def run_job(job: Job[Setting]) -> dict[str, Any]:
    """Train (or resume) one algorithm on one task for every seed, then evaluate its sweeps."""
    dataset, name, _ = resolve(job.setting.dataset, progress=False)
    schedule = job.setting.schedule
    return train_and_evaluate(job.algorithm, job.overrides, dataset, name, job.task, job.run_dir, schedule.steps,
                              schedule.seeds, schedule.episodes, schedule.families, job.label)


def prepare(profile: Profile, out: Path) -> None:
    """Generate the demonstrations once, before jobs (possibly parallel ones) read them."""
    from drorl.data.generate import generate
    from drorl.data.hdf5 import write_hdf5
    from drorl.data.registry import dataset_path

    for task in profile.tasks:
        source = _dataset_source(profile, task, out)
        path = Path(source) if source.endswith(".hdf5") else dataset_path(source)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_hdf5(generate(task, "expert-demos", episodes=profile.demo_episodes, seed=0, progress=False), path)


def jobs_of(profile: Profile, out: Path) -> list[Job[Setting]]:
    """Every (task, variant) of the profile; DR-BC's overrides are its published ones for the task."""
    schedule = Schedule(profile.steps, profile.seeds, profile.episodes, profile.families)
    return [Job(task, label, algorithm, overrides(task) if callable(overrides) else dict(overrides),
                out / task / label.replace(" ", "_").replace("=", ""),
                Setting(_dataset_source(profile, task, out), schedule))
            for task in profile.tasks for label, algorithm, overrides in profile.variants]


def show(console: Console, profile: Profile, jobs: list[Job], results: list[dict]) -> None:
    """Per task, a table of mean return against perturbation value for every variant."""
    for task in profile.tasks:
        console.print(comparison_table([(j.label, r) for j, r in zip(jobs, results) if j.task == task]))


REFERENCE = "BE-DROIL"


def _differences_from_reference(curves: dict[str, SeedCurves], families: Sequence[str]
                                ) -> dict[str, list[Difference]]:
    """BE-DROIL minus every other variant, per column (nominal, then each family's AUC and worst value);
    nothing without a BE-DROIL row."""
    if REFERENCE not in curves:
        return {}
    ref = curves[REFERENCE]
    return {label: [Difference.of(ref.nominal, other.nominal)]
            + [d for f in families for d in (Difference.of(ref.auc[f], other.auc[f]),
                                              Difference.of(ref.worst[f], other.worst[f]))]
            for label, other in curves.items() if label != REFERENCE}


WORD = {"helps": "beats", "hurts": "loses", "ties": "ties"}


def _difference_lines(differences: dict[str, list[Difference]], adjusted: dict[str, list[str]],
                      families: Sequence[str], family_size: int) -> list[str]:
    if not differences:
        return []
    lines = ["", f"{REFERENCE} minus each other variant (95 % Welch interval; beats / loses when it excludes 0; "
             f"then the verdict after Holm's correction over all {family_size} comparisons of this report):", "",
             "| vs | nominal | " + " | ".join(f"{f} AUC | {f} worst" for f in families) + " |",
             "|---" * (2 + 2 * len(families)) + "|"]
    for label, row in differences.items():
        cells = [f"{d.diff:+.1f} ± {d.half:.1f} ({WORD[d.verdict]}; Holm: {WORD[v]})"
                 for d, v in zip(row, adjusted[label])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _aggregate_lines(curves_of: dict[str, dict[str, SeedCurves]], profile: Profile, out: Path) -> list[str]:
    """IQM and friends over tasks (seeds x tasks per variant) of the nominal score and of the AUC averaged over
    the profile's families, and BE-DROIL's probability of improvement over every other variant."""
    labels = list(curves_of[profile.tasks[0]])
    nominal = {label: np.array([curves_of[t][label].nominal for t in profile.tasks]).T for label in labels}
    auc = {label: np.array([np.mean([curves_of[t][label].auc[f] for f in profile.families], axis=0)
                            for t in profile.tasks]).T for label in labels}
    pairs = [(REFERENCE, label) for label in labels if label != REFERENCE] if REFERENCE in labels else []
    auc_name = f"the AUC averaged over {', '.join(profile.families)}"
    return ["## Across tasks", "", *aggregate_section(nominal, pairs, "the nominal score"),
            *profile_lines(nominal, out / "profiles.png", "the nominal score"),
            *aggregate_section(auc, pairs, auc_name), *profile_lines(auc, out / "profiles-auc.png", auc_name)]


def write_report(profile_name: str, profile: Profile, jobs: list[Job], results: list[dict], out: Path) -> Path:
    lines = [f"# Robust imitation benchmark ({profile_name})", "",
             f"Seeds {list(profile.seeds)}; {profile.steps:,} gradient steps; {profile.episodes} evaluation "
             "episodes per seed and grid point. Scores are normalised (0 = random, 100 = the expert of the "
             "zoo / reference); entries are mean ± 95 % confidence half-width over seeds. AUC = mean "
             "normalised score over the sweep grid; worst = its minimum.", "",
             *missing_tasks_note(profile, PROFILES[profile_name])]
    summary, curves_of, differences_of = {}, {}, {}
    for task in profile.tasks:
        curves_of[task] = {job.label: SeedCurves.from_eval(res) for job, res in zip(jobs, results) if job.task == task}
        differences_of[task] = _differences_from_reference(curves_of[task], profile.families)
    every = [d for task in profile.tasks for row in differences_of[task].values() for d in row]
    flat_verdicts = iter(holm_verdicts(every))
    for task in profile.tasks:
        adjusted = {label: [next(flat_verdicts) for _ in row] for label, row in differences_of[task].items()}
        header = "| algorithm | nominal | " + " | ".join(f"{f} AUC | {f} worst" for f in profile.families) + " |"
        lines += [f"## {task}", "", header, "|---" * (2 + 2 * len(profile.families)) + "|"]
        for label, c in curves_of[task].items():
            cells = [fmt(c.nominal)] + [x for f in profile.families for x in (fmt(c.auc[f]), fmt(c.worst[f]))]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
            summary[f"{task}/{label}"] = dataclasses.asdict(c)
        lines += _difference_lines(differences_of[task], adjusted, profile.families, len(every))
        rows = [(job, res) for job, res in zip(jobs, results) if job.task == task]
        plot = plot_robustness([(job.label, res) for job, res in rows], out / f"{task}.png",
                               title=f"{task}: robustness curves ({profile_name})")
        lines += ["", f"![{task}]({plot.name})", ""]
    lines += _aggregate_lines(curves_of, profile, out)
    lines += report_lines((f"{job.task} {job.label}", job.run_dir) for job in jobs)
    report = out / "report.md"
    write_bytes_atomic(report, "\n".join(lines).encode())
    write_json_atomic(out / "results.json", summary)
    return report


SUITE = Suite("robust-il", PROFILES, jobs_of, run_job, write_report, prepare=prepare, show=show)
run = SUITE.run
