"""The model-based offline RL experiment (issue 18): COMBO, DROMO (Eq. 13 and the strict Eq. 17), MOPO and
MOPO-auto on drorl's Gymnasium-v5 datasets, scored nominally and along gravity and damping sweeps (does a
pessimistic model make a policy more robust to dynamics shift?). The DROMO paper has no experiments:
this suite is DROMO's first empirical evaluation.

Profiles: ``smoke`` (minutes: the suite's plumbing, tiny networks and data), ``quick`` (hopper-medium,
COMBO against DROMO), ``full`` (sized for the 2-core machine, runnable piecewise with ``--tasks``) and
``paper`` (the published scale: 1M updates, 5 seeds, nine datasets; for a GPU or ``--backend ray``). Every
algorithm on one dataset reads the same dynamics ensemble (cached under ``OUT/dynamics``, trained once
per dataset); every run resumes from its checkpoints and evaluation is skipped where eval.json exists.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from drorl import algos
from drorl.aggregates import aggregate_section
from drorl.algos.base import config_value, replace_config
from drorl.benchmarks.common import (Difference, Job, Schedule, SeedCurves, Suite, fmt, holm_verdicts, load_dataset,
                                    missing_tasks_note, pooled_seed_sd, prepare_datasets, profile_lines,
                                    resolvable_difference, train_and_evaluate)
from drorl.health import report_lines
from drorl.io_utils import write_bytes_atomic, write_json_atomic
from drorl.nn import dynamics
from drorl.plot import plot_robustness

Variant = tuple[str, str, dict[str, Any]]
MAIN: tuple[Variant, ...] = (("COMBO", "combo", {}), ("DROMO", "dromo", {}),
                             ("DROMO-strict", "dromo", {"variance": "strict"}), ("MOPO", "mopo", {}),
                             ("MOPO-auto", "mopo-auto", {}))
# (variant, baseline) pairs the report tests: the two questions of the issue
COMPARISONS = (("DROMO", "COMBO"), ("DROMO-strict", "COMBO"), ("MOPO-auto", "MOPO"))
# where each algorithm's model config sits in its (nested) config
MODEL_PREFIX = {"combo": "model.", "dromo": "combo.model.", "mopo": "model.", "mopo-auto": "mopo.model."}
SAC_PREFIX = {"combo": "sac.", "dromo": "combo.sac.", "mopo": "sac.", "mopo-auto": "mopo.sac."}
COMBO_PREFIX = {"combo": "", "dromo": "combo."}
# The public per-dataset settings. COMBO (OfflineRL-Kit, spec/model-based.md): beta 0.5 on halfcheetah-medium and
# the medium-replay datasets, else 5; horizon 1 on walker2d, else 5. MOPO (its authors' D4RL configs,
# github.com/tianheyu927/mopo, examples/config/d4rl): (horizon, lambda) per dataset; MOPO-auto takes the horizon
# only (its lambda multiplies an entropy in nats, not a std norm in raw units: it starts from its own default).
# Datasets outside these tables keep the algorithms' defaults.
COMBO_SMALL_BETA = {("halfcheetah", "medium"), ("hopper", "medium-replay"), ("walker2d", "medium-replay"),
                    ("halfcheetah", "medium-replay")}
MOPO_HORIZON_AND_PENALTY = {
    ("hopper", "medium"): (5, 5.0), ("hopper", "medium-replay"): (5, 1.0), ("hopper", "medium-expert"): (5, 1.0),
    ("walker2d", "medium"): (5, 5.0), ("walker2d", "medium-replay"): (1, 1.0), ("walker2d", "medium-expert"): (1, 2.0),
    ("halfcheetah", "medium"): (1, 1.0), ("halfcheetah", "medium-replay"): (5, 1.0),
    ("halfcheetah", "medium-expert"): (5, 5.0)}


@dataclasses.dataclass(frozen=True)
class Profile:
    tasks: tuple[str, ...]
    kinds: tuple[str, ...]
    families: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    episodes: int
    variants: tuple[Variant, ...] = MAIN
    transitions: int | None = None  # None: the registry's datasets (1M transitions)
    model: dict[str, Any] = dataclasses.field(default_factory=dict)  # model-config overrides for every variant
    sac: dict[str, Any] = dataclasses.field(default_factory=dict)  # SAC overrides for every variant
    combo: dict[str, Any] = dataclasses.field(default_factory=dict)  # COMBO overrides for COMBO and DROMO
    public_settings: bool = True  # the published per-dataset beta, horizon and lambda (public_settings)
    design: str = ""


TINY_DYNAMICS = {"dynamics.hidden_dims": (16, 16), "dynamics.weight_decays": (2.5e-5, 5e-5, 1e-4),
                 "dynamics.max_epochs": 3, "rollout_batch_size": 100, "rollout_every": 10}
PROFILES = {
    "smoke": Profile(("hopper",), ("medium",), ("gravity",), (0, 1), steps=20, episodes=1, transitions=2000,
                     model=TINY_DYNAMICS, sac={"hidden_dims": (32, 32), "batch_size": 32}),
    # COMBO's update at the public sizes (3 x 256 critics, 30 sampled actions per state, batch 256) ran
    # 1.6 updates/s for one seed on this machine while it was shared (MOPO's: 31 updates/s), so the
    # quick profile stays a look at the plumbing at scale, not an answer
    "quick": Profile(("hopper",), ("medium",), ("gravity", "damping"), (0, 1), steps=1_000, episodes=5,
                     variants=MAIN[:2], transitions=100_000, model={"dynamics.max_epochs": 30}, design=(
                         "Quick look: hopper-medium (100k transitions), COMBO against DROMO, 2 seeds x 1,000 "
                         "updates, the ensemble capped at 30 epochs: about half an hour on 2 cores.")),
    # sized from XLA's FLOP counts per update (tools/throughput.py's accounting): COMBO 14.0 GFLOP at the public
    # sizes (3 x 256 critics, 10 sampled actions of each of 3 kinds per state), 7.8 with 5 sampled actions,
    # 7.4 with 2 x 256 critics, 4.2 with both; DROMO 22.4 and 8.6 with both; MOPO 1.1. One seed sustained
    # ~25 GFLOP/s on one core under load (COMBO at the public sizes: 1.8 updates/s).
    "full": Profile(("hopper", "walker2d"), ("medium", "medium-replay"), ("gravity", "damping"), (0, 1, 2),
                    steps=8_000, episodes=10, variants=(MAIN[0], MAIN[1], MAIN[3], MAIN[4]), transitions=200_000,
                    model={"dynamics.max_epochs": 50}, sac={"hidden_dims": (256, 256)},
                    combo={"num_sampled_actions": 5}, design=(
                        "Reduced design, sized for about 24 CPU-hours on the 2-core machine and runnable piecewise "
                        "with --tasks: hopper and walker2d x medium and medium-replay (200k transitions each), "
                        "COMBO, DROMO, MOPO and MOPO-auto with the public per-dataset beta, horizon and lambda, "
                        "3 seeds x 8,000 updates. To fit, COMBO and DROMO both run 2 x 256 critics and 5 "
                        "sampled actions of each kind (COMBO 4.2 instead of 14.0 GFLOP per update, DROMO 8.6 "
                        "instead of 22.4), so the DROMO - COMBO comparison stays like for like; the ensembles "
                        "stop by 50 epochs (about 0.9 TFLOP an epoch: up to about half an hour each). Budget at "
                        "the measured ~25 GFLOP/s per seed and core: COMBO about 6, DROMO about 3 and MOPO about "
                        "20 updates/s, so per dataset 3 seeds x 8k updates of the four cost about 4.1 "
                        "CPU-hours; about 16.5 in all, plus the four ensembles and the evaluations. 8,000 "
                        "updates is early in these algorithms' training (the published runs take 1M): the "
                        "verdict is about the first stretch of learning, not the converged scores. Resolution: "
                        "with 3 seeds a 95 % Welch interval excludes zero for differences above 2.27 s, s the "
                        "per-seed standard deviation (about 21 points at OfflineRL-Kit's COMBO hopper-medium "
                        "s = 9.3); the report states s pooled over its own cells.")),
    "paper": Profile(("hopper", "walker2d", "halfcheetah"), ("medium", "medium-replay", "medium-expert"),
                     ("gravity", "damping"), (0, 1, 2, 3, 4), steps=1_000_000, episodes=10, design=(
                         "The published scale (COMBO, MOPO): nine datasets of 1M transitions, 5 seeds x 1M "
                         "updates, the public defaults (COMBO: 3 x 256 critics, 10 sampled actions, f 0.5, "
                         "beta and h per dataset; MOPO: f 0.05, h and lambda per dataset: "
                         "model_based.public_settings). For a GPU (the seeds train vectorised in one program) or "
                         "--backend ray.")),
}


@dataclasses.dataclass(frozen=True)
class Setting:
    """A model-based run's dataset and schedule. Attributes: kind, the dataset's kind; transitions, its size
    (None: the registry's); out, the benchmark's directory (generated datasets and the shared dynamics
    ensembles live under it); schedule, the profile's."""

    kind: str
    transitions: int | None
    out: Path
    schedule: Schedule


def public_settings(algorithm: str, task: str, kind: str) -> dict[str, Any]:
    """The published per-dataset settings of ``algorithm`` on ``task``-``kind``, at its nesting (none outside
    the public tables)."""
    model = MODEL_PREFIX[algorithm]
    if algorithm in COMBO_PREFIX:
        known = task in ("hopper", "walker2d", "halfcheetah")
        return {COMBO_PREFIX[algorithm] + "beta": 0.5 if (task, kind) in COMBO_SMALL_BETA else 5.0,
                model + "horizon": 1 if task == "walker2d" else 5} if known else {}
    if (task, kind) not in MOPO_HORIZON_AND_PENALTY:
        return {}
    horizon, penalty = MOPO_HORIZON_AND_PENALTY[task, kind]
    return {model + "horizon": horizon, **({"penalty_weight": penalty} if algorithm == "mopo" else {})}


def config_overrides(algorithm: str, profile: Profile, overrides: dict[str, Any], task: str,
                     kind: str) -> dict[str, Any]:
    """A variant's overrides over the profile's model, SAC and COMBO ones at the algorithm's nesting, over the
    public per-dataset settings of ``task``-``kind`` (when the profile uses them)."""
    model, agent = MODEL_PREFIX[algorithm], SAC_PREFIX[algorithm]
    combo = {COMBO_PREFIX[algorithm] + k: v for k, v in profile.combo.items()} if algorithm in COMBO_PREFIX else {}
    public = public_settings(algorithm, task, kind) if profile.public_settings else {}
    return {**public, **{model + k: v for k, v in profile.model.items()},
            **{agent + k: v for k, v in profile.sac.items()}, **combo, **overrides}


def run_job(job: Job[Setting]) -> dict[str, Any]:
    """Train (or resume) one variant on one dataset for every seed, then evaluate it along the sweeps."""
    setting, schedule = job.setting, job.setting.schedule
    dataset, name = load_dataset(job.task, setting.kind, setting.transitions, setting.out)
    return train_and_evaluate(job.algorithm, job.overrides, dataset, name, job.task, job.run_dir, schedule.steps,
                              schedule.seeds, schedule.episodes, schedule.families, label=job.label,
                              prepared_dir=setting.out / "dynamics")


def jobs_of(profile: Profile, out: Path) -> list[Job[Setting]]:
    schedule = Schedule(profile.steps, profile.seeds, profile.episodes, profile.families)
    return [Job(task, label, algorithm, config_overrides(algorithm, profile, overrides, task, kind),
                out / task / kind / label,
                Setting(kind, profile.transitions, out, schedule))
            for task in profile.tasks for kind in profile.kinds for label, algorithm, overrides in profile.variants]


def model_config(job: Job[Setting]) -> Any:
    """The job's dynamics-ensemble and rollout settings (``model_based.ModelConfig``), at its algorithm's nesting."""
    config = replace_config(algos.get(job.algorithm, "offline").Config(), job.overrides, option="benchmark override")
    return config_value(config, MODEL_PREFIX[job.algorithm].rstrip("."))


def prepare(profile: Profile, out: Path) -> None:
    """The datasets, then every dataset's ensembles, trained here once before any job starts: jobs run in
    parallel (--workers, Ray) would otherwise each train the ensemble they share."""
    prepare_datasets(profile.tasks, profile.kinds, profile.transitions, out)
    needed = {}
    for job in jobs_of(profile, out):
        model = model_config(job)
        needed.setdefault((job.task, job.setting.kind, repr(model.dynamics), model.model_seed), model)
    for (task, kind, _, seed), model in needed.items():
        dataset, _ = load_dataset(task, kind, profile.transitions, out)
        dynamics.cached(model.dynamics, dataset, seed, out / "dynamics")


def write_report(profile_name: str, profile: Profile, jobs: list[Job[Setting]], results: list[dict], out: Path) -> Path:
    labels = [label for label, _, _ in profile.variants]
    pairs = [(a, b) for a, b in COMPARISONS if a in labels and b in labels]
    curves = {(j.task, j.setting.kind, j.label): SeedCurves.from_eval(r) for j, r in zip(jobs, results)}
    cells = list(dict.fromkeys((j.task, j.setting.kind) for j in jobs))
    lines = [f"# Model-based offline RL benchmark ({profile_name})", "",
             f"{', '.join(labels[:-1])} and {labels[-1]}: the first empirical evaluation of DROMO (its paper has "
             "none). "
             f"Seeds {list(profile.seeds)}; {profile.steps:,} updates; {profile.episodes} evaluation episodes per "
             "seed and grid point. Scores are normalised (0 = random, 100 = the dataset's expert reference); "
             "entries are mean ± 95 % confidence half-width over seeds; differences carry their 95 % Welch "
             "interval and the verdict after Holm's correction over every comparison of this report.", "",
             *missing_tasks_note(profile, PROFILES[profile_name]), *([profile.design, ""] if profile.design else [])]
    seed_sd = pooled_seed_sd([c.nominal for c in curves.values()])
    if len(profile.seeds) > 1 and seed_sd == seed_sd:
        lines += [f"Resolution: pooled per-seed standard deviation {seed_sd:.1f} points, so with "
                  f"{len(profile.seeds)} seeds an interval excludes zero only for differences above about "
                  f"{resolvable_difference(seed_sd, len(profile.seeds)):.1f} points.", ""]
    metrics = [("nominal", lambda c: c.nominal)] + [
        (f"{family} AUC", lambda c, f=family: c.auc[f]) for family in profile.families]
    keys = [(cell, metric, pair) for cell in cells for metric, _ in metrics for pair in pairs]
    metric_of = dict(metrics)
    differences = {(cell, metric, (a, b)): Difference.of(metric_of[metric](curves[(*cell, a)]),
                                                        metric_of[metric](curves[(*cell, b)]))
                   for cell, metric, (a, b) in keys}
    adjusted = dict(zip(keys, holm_verdicts([differences[k] for k in keys])))
    for task, kind in cells:
        lines += [f"## {task}-{kind}", "", "| score | " + " | ".join(labels) + " | "
                  + " | ".join(f"{a} − {b}" for a, b in pairs) + " |", "|---" * (1 + len(labels) + len(pairs)) + "|"]
        for name, get in metrics:
            comparisons = [f"{d.diff:+.1f} ± {d.half:.1f} ({adjusted[(task, kind), name, pair]})"
                           for pair in pairs for d in [differences[(task, kind), name, pair]]]
            lines.append(f"| {name} | " + " | ".join(fmt(get(curves[task, kind, label])) for label in labels)
                         + " | " + " | ".join(comparisons) + " |")
        plot = plot_robustness([(j.label, r) for j, r in zip(jobs, results)
                                if (j.task, j.setting.kind) == (task, kind)],
                               out / f"{task}-{kind}.png", title=f"{task}-{kind} ({profile_name})")
        lines += ["", f"![{task}-{kind}]({plot.name})", ""]
    lines += report_lines((f"{j.task}-{j.setting.kind} {j.label}", j.run_dir) for j in jobs)
    matrices = {label: np.array([curves[task, kind, label].nominal for task, kind in cells]).T for label in labels}
    lines += ["## Across datasets", "", *aggregate_section(matrices, pairs, "the nominal score over every dataset"),
              *profile_lines(matrices, out / "profiles.png", "the nominal score over every dataset")]
    report = out / "report.md"
    write_bytes_atomic(report, "\n".join(lines).encode())
    write_json_atomic(out / "results.json", {f"{t}/{k}/{label}": dataclasses.asdict(c)
                                             for (t, k, label), c in curves.items()})
    return report


SUITE = Suite("model-based", PROFILES, jobs_of, run_job, write_report, prepare=prepare)
run = SUITE.run
