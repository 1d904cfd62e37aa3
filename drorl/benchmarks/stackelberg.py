"""The Stackelberg batch-policy-learning experiment (issue 20; Zhou and Qu 2023, arXiv 2309.16188): does
StackelbergLearner keep its return as the data's coverage shrinks, against its simultaneous-gradient
ablations, behaviour cloning, fitted Q iteration and discrete CQL?

Cells: CartPole batch data from the DQN zoo's behaviour policies (``medium``: return ~135, ``expert``: 500)
at decreasing coverage: every episode (``full``, the control cell where the paper predicts no gain), episodes
cut where the cart first leaves a slab of positions (``confined``: about half the rows), and small
fractions of whole episodes (``10%``, ``2%``). The ``full`` profile adds hopper-medium, where the leader is
tanh-Gaussian, against BC and BCQ. The score is the true return of the learned policy (deterministic
episodes); the aggregates use normalised scores (0 = random, 100 = the zoo's expert).

Profiles: ``smoke`` (seconds, for the tests), ``quick`` (minutes on 2 cores, from a fresh install), ``study``
(the sweep behind StackelbergLearner's defaults on CartPole), ``full`` (5 seeds, sized for about 24
CPU-hours, runnable piecewise with ``--tasks``) and ``paper`` (the published scale; not run here). Every
run resumes from its checkpoints and evaluation is skipped where eval.json exists.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from drorl.aggregates import aggregate_section
from drorl.benchmarks.common import (Difference, Job, Schedule, Suite, fmt, holm_verdicts, load_dataset, mean_and_ci,
                                    missing_tasks_note, pooled_seed_sd, prepare_datasets, profile_lines,
                                    resolvable_difference, train_and_evaluate)
from drorl.errors import DrorlError
from drorl.health import report_lines
from drorl.io_utils import atomic_path, write_bytes_atomic, write_json_atomic
from drorl.scores import normalized_score

Method = tuple[str, str, dict[str, Any]]  # label, registered algorithm, config overrides
STACKELBERG = "StackelbergLearner"
DISCRETE_METHODS: tuple[Method, ...] = (
    (STACKELBERG, "stackelberg", {}),
    # the paper's ablation: the leader ascends grad_theta E_{s0}[q(s0, pi)] only (moves pi at initial states)
    ("simultaneous s0", "stackelberg", {"simultaneous": True, "leader_states": "initial"}),
    # the spec's informative ablation: the same partial gradient over dataset states (ATAC-style)
    ("simultaneous D", "stackelberg", {"simultaneous": True, "leader_states": "dataset"}),
    ("BC", "bc-discrete", {}),
    ("FQI", "fqi", {}),
    ("CQL", "cql", {}),
)
CONTINUOUS_METHODS: tuple[Method, ...] = ((STACKELBERG, "stackelberg", {}), ("BC", "bc", {}), ("BCQ", "bcq", {}))
# where each algorithm keeps its hidden widths and batch size (a profile may shrink every network at once)
NETWORK_KEYS = {"stackelberg": ("policy_hidden_dims", "q_hidden_dims"), "bc-discrete": ("hidden_dims",),
                "fqi": ("hidden_dims",), "cql": ("q.hidden_dims",), "bc": ("policy.hidden_dims",),
                "bcq": ("hidden_dims", "vae_hidden_dims")}
BATCH_KEY = {"stackelberg": "batch_size", "bc-discrete": "batch_size", "fqi": "batch_size", "cql": "q.batch_size",
             "bc": "batch_size", "bcq": "batch_size"}


@dataclasses.dataclass(frozen=True)
class Coverage:
    """A coverage level of a CartPole dataset: ``subsample`` keeps that fraction of whole episodes;
    ``confined`` cuts every episode where the cart first leaves the quality's slab (``CONFINE_SLAB``)."""

    name: str
    subsample: float = 1.0
    confined: bool = False


COVERAGES = {c.name: c for c in (Coverage("full"), Coverage("confined", confined=True),
                                 Coverage("10%", subsample=0.1), Coverage("2%", subsample=0.02))}
# (observation, low, high): cart positions that keep about half the rows of the quality's data (measured on
# 100k rows: medium, which drifts left to the track's end, keeps 51 % within +-1; expert, which stays near the
# centre, keeps 63 % within +-0.3)
CONFINE_SLAB = {"medium": (0, -1.0, 1.0), "expert": (0, -0.3, 0.3)}


@dataclasses.dataclass(frozen=True)
class Profile:
    """Attributes: tasks, datasets TASK-KIND (CartPole ones at every coverage level, others at full coverage
    with the continuous methods); coverages, COVERAGES names; seeds; steps, updates per run (continuous
    tasks: ``continuous_steps`` when set); episodes, evaluation episodes per seed; transitions, rows of each
    generated dataset (None: the registry's); methods, the discrete tasks' (label, algorithm, overrides);
    networks and batch_size, every algorithm's hidden widths and batch (None: each one's default); design,
    the design's rationale and budget, printed at the top of the report."""

    tasks: tuple[str, ...]
    coverages: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    episodes: int
    transitions: int | None
    methods: tuple[Method, ...] = DISCRETE_METHODS
    continuous_methods: tuple[Method, ...] = CONTINUOUS_METHODS
    continuous_steps: int | None = None
    networks: tuple[int, ...] | None = None
    batch_size: int | None = None
    design: str = ""


CARTPOLE = ("cartpole-medium", "cartpole-expert")
PROFILES = {
    # the plumbing at two coverage levels; two methods only, since every run costs seconds of compilation
    "smoke": Profile(("cartpole-medium",), ("full", "10%"), (0, 1), steps=20, episodes=1, transitions=2000,
                     methods=(DISCRETE_METHODS[0], DISCRETE_METHODS[3]), networks=(16, 16), batch_size=32),
    "quick": Profile(("cartpole-medium",), ("full", "confined", "10%"), (0, 1), steps=3_000, episodes=5,
                     transitions=50_000, networks=(64, 64), batch_size=128, design=(
                         "Quick look: cartpole-medium (50k rows) at full, confined and 10 % coverage, every "
                         "discrete method, 2 seeds x 3,000 updates with 64-wide networks and batches of 128; "
                         "too few seeds to resolve differences below the policies' spread. Measured: the full-"
                         "coverage cell with the dataset's generation took 142 CPU-seconds on one core, so the "
                         "profile takes about 7 CPU-minutes.")),
    # one knob at a time from the default on the cell where the learner collapsed (issue 20), the dataset-state
    # simultaneous ablation as the reference; what single-seed runs of these knobs showed is in the design text
    "study": Profile(("cartpole-medium",), ("full", "10%"), (0, 1, 2), steps=3_000, episodes=10,
                     transitions=100_000, methods=(
                         (STACKELBERG, "stackelberg", {}),
                         ("lambda=10", "stackelberg", {"kernel_weight": 10.0}),
                         ("lambda=1000", "stackelberg", {"kernel_weight": 1000.0}),
                         ("beta=100", "stackelberg", {"beta_initial": 100.0, "beta_floor": 100.0}),
                         ("leader lr/10", "stackelberg", {"policy_lr": 3e-5}),
                         ("CG 30", "stackelberg", {"cg_iters": 30}),
                         ("exact blocks", "stackelberg", {"follower_curvature": "v"}),
                         ("Stackelberg D", "stackelberg", {"leader_states": "dataset"}),
                         ("simultaneous D", "stackelberg", {"simultaneous": True, "leader_states": "dataset"}),
                         ("Stackelberg rel", "stackelberg", {"leader_states": "dataset", "pessimism": "relative"}),
                         ("Stackelberg rel beta=10", "stackelberg",
                          {"leader_states": "dataset", "pessimism": "relative", "beta_initial": 10.0,
                           "beta_floor": 10.0}),
                         ("Stackelberg rel warm-up", "stackelberg",
                          {"leader_states": "dataset", "pessimism": "relative", "leader_warmup": 1_000}),
                         ("simultaneous rel", "stackelberg",
                          {"simultaneous": True, "leader_states": "dataset", "pessimism": "relative"}),
                     ), design=(
                         "The study behind StackelbergLearner's settings, on the cell where it collapsed: one knob "
                         "at a time from the default (kernel weight lambda 10 and 1000, a fixed beta of 100, a "
                         "leader ten times slower, 30 CG steps, the exact Hessian and mixed block, the "
                         "dataset-state leader, and relative pessimism with and without the Stackelberg term, "
                         "the former also at a fixed beta of 10 and after a 1,000-update simultaneous warm-up), "
                         "the dataset-state simultaneous ablation as the reference; cartpole-medium (100k rows) "
                         "at full and 10 % coverage, 3 seeds x 3,000 updates: about 6 CPU-hours (the 4.5 the "
                         "first nine variants were sized at, plus 6 runs x 3,000 updates at 0.09 s for each new "
                         "Stackelberg variant and 0.026 s for the new ablation). Single-seed pilots (1,500 "
                         "updates, 256-wide networks) before the kernel and mixed-block fixes: the default, "
                         "beta=100 and the slow leader ended at "
                         "returns of 9-10 with the leader's Stackelberg term 100-1,400 times its own gradient; "
                         "lambda=10 let q(s0, pi) run away below zero (return 28); after the fixes the default "
                         "reached 145, 10 and 9 on three seeds, the Stackelberg term still 16-500 times the "
                         "leader's own gradient.")),
    # sized from measured CPU costs per update and seed on one core of the 2-core machine (under load):
    # StackelbergLearner 83-92 ms, its simultaneous ablations 25-27 ms, BC 2.0, FQI 2.3, CQL 2.8 (CartPole,
    # 256-wide networks, batch 256); on hopper StackelbergLearner 73 ms, BC 1.9, BCQ 49
    "full": Profile((*CARTPOLE, "hopper-medium"), tuple(COVERAGES), (0, 1, 2, 3, 4), steps=10_000, episodes=10,
                    transitions=100_000, continuous_steps=20_000, design=(
                        "Reduced design: CartPole-medium and -expert (100k rows each) at full, confined, 10 % and "
                        "2 % coverage, every discrete method, and hopper-medium (100k rows) with the "
                        "tanh-Gaussian StackelbergLearner against BC and BCQ; 5 seeds, 10,000 updates on "
                        "CartPole and 20,000 on hopper, the algorithms' default networks (the paper: 1M "
                        "updates). Full coverage is the control cell (the paper claims gains under poor "
                        "coverage). Budget from measured costs per update and seed on one core: CartPole "
                        "8 cells x 5 seeds x 10k x 0.153 s = 17 CPU-hours, hopper 5 x 20k x 0.124 s = 3.4, "
                        "about 21 in all (11 hours on both cores: run cartpole-medium, cartpole-expert and "
                        "hopper-medium as separate --tasks into one --out). Resolution: with a per-seed "
                        "standard deviation s of the return, 5 seeds resolve differences above 1.46 s; the quick "
                        "profile's full-coverage cell (2 seeds, 64-wide networks) pooled s = 28 over its six "
                        "methods, so about 41 return points (CartPole's returns run from 9 to 500; methods that "
                        "collapse have almost no spread, unstable ones far more). The report states s pooled "
                        "over its own cells.")),
    "paper": Profile((*CARTPOLE, "hopper-medium"), tuple(COVERAGES), (0, 1, 2, 3, 4), steps=1_000_000,
                     episodes=10, transitions=None, design=(
                         "The published scale: 1M updates, 5 seeds, the registry's 1M-row datasets, the "
                         "algorithms' default networks. For a GPU (the seeds train vectorised in one program) or "
                         "--backend ray; not run on the 2-core machine.")),
}


def split_task(task: str) -> tuple[str, str]:
    """``"cartpole-medium"`` -> ("cartpole", "medium")."""
    env, _, kind = task.partition("-")
    return env, kind


def is_discrete(task: str) -> bool:
    return split_task(task)[0] == "cartpole"


@dataclasses.dataclass(frozen=True)
class Setting:
    """A Stackelberg-suite run's dataset and schedule. Attributes: coverage, a COVERAGES name; transitions, the
    dataset's size (None: the registry's); out, the benchmark's directory (generated datasets live under it);
    schedule, the profile's (its continuous steps on a continuous task)."""

    coverage: str
    transitions: int | None
    out: Path
    schedule: Schedule


def network_overrides(profile: Profile, algorithm: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The profile's network widths and batch size at the algorithm's keys, then the method's own overrides."""
    shared: dict[str, Any] = {}
    if profile.networks is not None:
        shared |= {key: profile.networks for key in NETWORK_KEYS[algorithm]}
    if profile.batch_size is not None:
        shared[BATCH_KEY[algorithm]] = profile.batch_size
    return shared | overrides


def config_overrides(job: Job[Setting], dataset: Any) -> dict[str, Any]:
    """The job's overrides and, for StackelbergLearner, the reward scale c = the data's mean |r| unless the
    method sets it (the spec: lambda trades squared-reward units against return units, so rewards are
    normalised; CartPole's is 1)."""
    if job.algorithm != "stackelberg":
        return job.overrides
    return {"reward_scale": float(np.mean(np.abs(dataset.rewards))) or 1.0} | job.overrides


def coverage_dataset(dataset: Any, name: str, kind: str, coverage: Coverage) -> tuple[Any, str]:
    """``dataset`` restricted to ``coverage`` (each corruption records itself in the metadata) and its id."""
    from drorl.data import corrupt

    if coverage.subsample < 1:
        dataset = corrupt.subsample_episodes(dataset, coverage.subsample, seed=0)
        name += f"+subsample({coverage.subsample:g})"
    if coverage.confined:
        dim, low, high = CONFINE_SLAB[kind]
        dataset = corrupt.confine_to_region(dataset, dim, low, high)
        name += f"+confine({dim}:{low:g}:{high:g})"
    return dataset, name


def run_job(job: Job[Setting]) -> dict[str, Any]:
    """Train (or resume) one method on one dataset at one coverage level for every seed, then evaluate it."""
    setting, schedule = job.setting, job.setting.schedule
    env, kind = split_task(job.task)
    dataset, name = load_dataset(env, kind, setting.transitions, setting.out)
    dataset, name = coverage_dataset(dataset, name, kind, COVERAGES[setting.coverage])
    result = train_and_evaluate(job.algorithm, config_overrides(job, dataset), dataset, name, env, job.run_dir,
                                schedule.steps, schedule.seeds, schedule.episodes, label=job.label)
    return result | {"rows": len(dataset), "episodes_in_data": dataset.num_episodes}


def run_dir_of(out: Path, task: str, coverage: str, label: str) -> Path:
    slug = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in label)
    return out / task / coverage.replace("%", "pct") / slug


def jobs_of(profile: Profile, out: Path) -> list[Job[Setting]]:
    """Every (dataset, coverage level, method): CartPole datasets at each of the profile's coverage levels
    with the discrete methods, other datasets at full coverage with the continuous ones."""
    jobs = []
    for task in profile.tasks:
        discrete = is_discrete(task)
        coverages = profile.coverages if discrete else ("full",)
        methods = profile.methods if discrete else profile.continuous_methods
        steps = profile.steps if discrete else profile.continuous_steps or profile.steps
        schedule = Schedule(steps, profile.seeds, profile.episodes)
        jobs += [Job(task, label, algorithm, network_overrides(profile, algorithm, overrides),
                     run_dir_of(out, task, coverage, label), Setting(coverage, profile.transitions, out, schedule))
                 for coverage in coverages for label, algorithm, overrides in methods]
    return jobs


def check_profile(profile: Profile) -> None:
    """One-line errors for a profile that cannot run: unknown coverage levels, algorithms or datasets."""
    from drorl import algos

    unknown = [c for c in profile.coverages if c not in COVERAGES]
    if unknown:
        raise DrorlError(f"coverage levels {', '.join(unknown)}: expected some of {', '.join(COVERAGES)}")
    for task in profile.tasks:
        env, kind = split_task(task)
        if is_discrete(task) and "confined" in profile.coverages and kind not in CONFINE_SLAB:
            raise DrorlError(f"{task}: no confinement slab for the {kind} quality (CONFINE_SLAB)")
    for label, algorithm, _ in (*profile.methods, *profile.continuous_methods):
        algos.get(algorithm, "offline")
        if algorithm not in NETWORK_KEYS:
            raise DrorlError(f"{label}: algorithm {algorithm} has no entry in NETWORK_KEYS")


def prepare(profile: Profile, out: Path) -> None:
    """Check the profile, then make its datasets ready."""
    check_profile(profile)
    for task in profile.tasks:
        env, kind = split_task(task)
        prepare_datasets([env], [kind], profile.transitions, out)


@dataclasses.dataclass(frozen=True)
class CellScores:
    """One method on one dataset and coverage level: per-seed returns and normalised scores."""

    returns: list[float]
    normalised: list[float]
    rows: int
    episodes_in_data: int

    @classmethod
    def from_eval(cls, result: dict[str, Any]) -> "CellScores":
        returns = [float(r) for r in result["nominal"]["per_seed"]]
        lo, hi = result["reference"]["min"], result["reference"]["max"]
        return cls(returns, [float(normalized_score(r, lo, hi)) for r in returns], result["rows"],
                   result["episodes_in_data"])


def final_metrics(run_dir: Path) -> dict[str, float]:
    """Each metric's value in the run's last logged chunk, averaged over seeds (warning records left out)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = [line for line in lines if "warning" not in line]
    if not lines:
        return {}
    last = [line for line in lines if line["step"] == lines[-1]["step"]]
    keys = [k for k, v in last[0].items() if isinstance(v, (int, float)) and k not in ("step", "seed")]
    return {k: float(np.mean([line[k] for line in last])) for k in keys}


def diagnostic_lines(jobs: list[Job[Setting]]) -> list[str]:
    """The StackelbergLearner-family runs' state at the end of training, beside their scores: whether the
    follower's pessimistic value and kernel loss settled, how the leader's two terms compare, whether CG
    met negative curvature, and whether the policy collapsed onto one action."""
    rows = []
    for job in jobs:
        if job.algorithm != "stackelberg":
            continue
        m = final_metrics(job.run_dir)
        if not m:
            continue
        ratio = m.get("leader_stackelberg_norm", 0.0) / max(m.get("leader_partial_norm", 0.0), 1e-12)
        rows.append(f"| {job.task} | {job.setting.coverage} | {job.label} | "
                    f"{m.get('initial_value', float('nan')):.3f} | "
                    f"{m.get('kernel_loss', float('nan')):.3g} | {ratio:.3g} | "
                    f"{m.get('cg_negative_curvature', 0.0):.2f} | {m.get('policy_entropy', float('nan')):.3f} |")
    if not rows:
        return []
    return ["## Diagnostics of the game", "",
            "Last logged chunk, mean over seeds: q(s0, pi) is the follower's pessimistic value (in units of "
            "(1 - gamma) x return / reward scale); the kernel loss is on residuals in those units; the ratio "
            "is |Stackelberg term| / |grad_theta f1| of the leader's step (0 for the simultaneous ablations); "
            "negative curvature is the fraction of leader steps whose CG stopped on it; entropy is the "
            "policy's at dataset states (ln 2 = 0.693 is uniform over CartPole's two actions).", "",
            "| dataset | coverage | method | q(s0, pi) | kernel loss | Stackelberg / partial | CG negative "
            "curvature | entropy |", "|---" * 8 + "|", *rows, ""]


def plot_coverage(task: str, coverages: Sequence[str], series: dict[str, list[tuple[float, float]]],
                  rows: Sequence[int], out: Path, title: str) -> Path:
    """Mean return with its 95 % interval against coverage level (rows of data in the label), one line per
    method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(coverages), 3.8), layout="constrained")
    x = np.arange(len(coverages))
    for i, (label, points) in enumerate(series.items()):
        means, halves = np.array(points).T
        offset = (i - (len(series) - 1) / 2) * 0.04
        ax.errorbar(x + offset, means, yerr=halves, marker="o", ms=4, capsize=3, label=label)
    ax.set_xticks(x, [f"{c}\n{n:,} rows" for c, n in zip(coverages, rows)])
    ax.set_xlabel("coverage")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.legend(fontsize=8)
    target = out / f"{task}.png"
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return target


def write_report(profile_name: str, profile: Profile, jobs: list[Job[Setting]], results: list[dict],
                 out: Path) -> Path:
    scores = {(j.task, j.setting.coverage, j.label): CellScores.from_eval(r) for j, r in zip(jobs, results)}
    cells = list(dict.fromkeys((j.task, j.setting.coverage) for j in jobs))
    labels_of = {task: list(dict.fromkeys(j.label for j in jobs if j.task == task)) for task in profile.tasks}
    pairs_of = {task: [(STACKELBERG, other) for other in labels if other != STACKELBERG]
                for task, labels in labels_of.items() if STACKELBERG in labels}
    keys = [(task, coverage, pair) for task, coverage in cells for pair in pairs_of.get(task, [])]
    differences = {(task, coverage, (a, b)): Difference.of(scores[task, coverage, a].returns,
                                                          scores[task, coverage, b].returns)
                   for task, coverage, (a, b) in keys}
    adjusted = dict(zip(keys, holm_verdicts([differences[k] for k in keys])))
    lines = [f"# Stackelberg batch policy learning benchmark ({profile_name})", "",
             f"Seeds {list(profile.seeds)}; {profile.steps:,} updates per run on CartPole"
             + (f", {profile.continuous_steps:,} on the continuous task" if profile.continuous_steps else "")
             + f"; {profile.episodes} deterministic evaluation episode{'s' * (profile.episodes != 1)} per seed. "
             "Entries are the true return, mean ± 95 % Student-t half-width over seeds. Comparisons: "
             f"{STACKELBERG} minus each other method, the difference of mean returns with its 95 % Welch "
             "interval, the raw verdict (beats / loses when the interval excludes 0, else ties) and the verdict "
             f"after Holm's correction over all {len(keys)} comparisons of this report. StackelbergLearner's "
             "rewards are divided by the data's mean |r| (1 on CartPole).", "",
             *missing_tasks_note(profile, PROFILES[profile_name]),
             *([profile.design, ""] if profile.design else [])]
    seed_sd = pooled_seed_sd([s.returns for s in scores.values()])
    if len(profile.seeds) > 1 and np.isfinite(seed_sd):
        lines += [f"Resolution: the per-seed standard deviation of the return pooled over every cell is "
                  f"{seed_sd:.1f}, so with {len(profile.seeds)} seeds per arm a 95 % Welch interval excludes zero "
                  f"only for differences above about {resolvable_difference(seed_sd, len(profile.seeds)):.1f}.",
                  ""]
    word = {"helps": "beats", "hurts": "loses", "ties": "ties"}
    for task in profile.tasks:
        labels, pairs = labels_of[task], pairs_of.get(task, [])
        coverages = [c for t, c in cells if t == task]
        lines += [f"## {task}", "", "| coverage | rows (episodes) | " + " | ".join(labels) + " |",
                  "|---" * (2 + len(labels)) + "|"]
        for coverage in coverages:
            first = scores[task, coverage, labels[0]]
            lines.append(f"| {coverage} | {first.rows:,} ({first.episodes_in_data}) | "
                         + " | ".join(fmt(scores[task, coverage, label].returns) for label in labels) + " |")
        if pairs:
            lines += ["", "| coverage | " + " | ".join(f"{a} − {b}" for a, b in pairs) + " |",
                      "|---" * (1 + len(pairs)) + "|"]
            for coverage in coverages:
                row = [f"{d.diff:+.1f} ± {d.half:.1f} ({word[d.verdict]}; Holm: {word[verdict]})"
                       for pair in pairs for d, verdict in [(differences[task, coverage, pair],
                                                             adjusted[task, coverage, pair])]]
                lines.append(f"| {coverage} | " + " | ".join(row) + " |")
        series = {label: [mean_and_ci(scores[task, c, label].returns) for c in coverages] for label in labels}
        plot = plot_coverage(task, coverages, series, [scores[task, c, labels[0]].rows for c in coverages], out,
                             f"{task}: return against coverage ({profile_name})")
        lines += ["", f"![{task}]({plot.name})", ""]
    lines += diagnostic_lines(jobs)
    lines += ["## Across datasets and coverage levels", ""]
    for discrete in (True, False):
        group = [(t, c) for t, c in cells if is_discrete(t) == discrete]
        if not group:
            continue
        labels = [label for label in labels_of[group[0][0]] if all((t, c, label) in scores for t, c in group)]
        matrices = {label: np.array([scores[t, c, label].normalised for t, c in group]).T for label in labels}
        pairs = [(STACKELBERG, other) for other in labels if other != STACKELBERG] if STACKELBERG in labels else []
        what = ("the normalised score (0 = random, 100 = the zoo's expert) over every CartPole dataset and "
                "coverage level" if discrete else "the normalised score on the continuous datasets")
        lines += [*aggregate_section(matrices, pairs, what),
                  *profile_lines(matrices, out / ("profiles.png" if discrete else "profiles-continuous.png"), what)]
    lines += report_lines((f"{j.task} {j.setting.coverage} {j.label}", j.run_dir) for j in jobs)
    report = out / "report.md"
    write_bytes_atomic(report, "\n".join(lines).encode())
    write_json_atomic(out / "results.json", {f"{t}/{c}/{label}": dataclasses.asdict(s)
                                             for (t, c, label), s in scores.items()})
    return report


SUITE = Suite("stackelberg", PROFILES, jobs_of, run_job, write_report, prepare=prepare)
run = SUITE.run
