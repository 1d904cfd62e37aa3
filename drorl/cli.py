"""The ``drorl`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from drorl import algos as _algos
from drorl.errors import DrorlError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distributionally robust and pessimistic RL from fixed data.")
datasets_app = typer.Typer(no_args_is_help=True, help="Generate, inspect, import and export offline datasets.")
app.add_typer(datasets_app, name="datasets")
zoo_app = typer.Typer(no_args_is_help=True, help="The behaviour-policy zoo that generates the datasets.")
app.add_typer(zoo_app, name="zoo")
console = Console()


def _parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise DrorlError(f"--seeds {text}: expected comma-separated integers such as 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise DrorlError(f"--seeds {text}: expected distinct integers such as 0,1,2")
    return seeds


def _parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise DrorlError(f"--set {item}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


@datasets_app.command("generate")
def datasets_generate(
    task: str = typer.Argument(..., help="hopper, halfcheetah, walker2d, ant, inverted-pendulum or cartpole."),
    kind: str = typer.Argument(..., help="random, medium, expert, medium-replay, medium-expert, mixed or "
                                         "expert-demos (all but random use the behaviour-policy zoo)."),
    transitions: Optional[int] = typer.Option(None, help="Rows to collect (default 1,000,000)."),
    episodes: Optional[int] = typer.Option(None, help="Whole episodes, for expert-demos (default 10)."),
    seed: int = typer.Option(0, help="Seed of the environments and the behaviour policy's noise."),
    reward_noise: float = typer.Option(0.0, help="Add N(0, sigma^2) to every reward (recorded in the metadata)."),
    subsample: float = typer.Option(1.0, help="Keep this fraction of whole episodes (recorded in the metadata)."),
    confine: Optional[str] = typer.Option(None, help="DIM:LOW:HIGH: cut every episode where observation[DIM] "
                                                     "first leaves [LOW, HIGH] (recorded in the metadata)."),
    out: Optional[Path] = typer.Option(None, help="Output HDF5 file (default $DRORL_DATA/TASK-KIND.hdf5, "
                                                  "with -noiseS / -subF / -confineD_L_H suffixes for corrupted "
                                                  "data)."),
):
    """Roll out behaviour policies and write a D4RL-layout HDF5 file."""
    from drorl.data import corrupt
    from drorl.data.generate import generate
    from drorl.data.hdf5 import write_hdf5
    from drorl.data.registry import dataset_path
    from drorl.envs import get_task

    if transitions is not None and transitions <= 0:
        raise DrorlError(f"--transitions {transitions}: expected a positive number")
    if not 0 < subsample <= 1 or reward_noise < 0:
        raise DrorlError("--subsample must be in (0, 1] and --reward-noise >= 0")
    region = corrupt.parse_region(confine) if confine else None
    info = get_task(task)
    dataset = generate(info.name, kind, transitions=transitions, episodes=episodes, seed=seed)
    name = f"{info.name}-{kind}"
    if reward_noise > 0:
        dataset, name = corrupt.reward_noise(dataset, reward_noise, seed), f"{name}-noise{reward_noise:g}"
    if subsample < 1:
        dataset, name = corrupt.subsample_episodes(dataset, subsample, seed), f"{name}-sub{subsample:g}"
    if region is not None:
        dim, low, high = region
        dataset, name = corrupt.confine_to_region(dataset, dim, low, high), f"{name}-confine{dim}_{low:g}_{high:g}"
    path = write_hdf5(dataset, out or dataset_path(name))
    console.print(f"wrote {path} ({len(dataset):,} transitions, {dataset.num_episodes} episodes)")


@datasets_app.command("list")
def datasets_list():
    """List the datasets under $DRORL_DATA."""
    from drorl.data.registry import data_dir, list_datasets

    table = Table(title=f"datasets in {data_dir()}")
    for col in ("name", "size (MB)"):
        table.add_column(col)
    for path in list_datasets():
        table.add_row(path.stem, f"{path.stat().st_size / 1e6:.1f}")
    console.print(table)


@datasets_app.command("info")
def datasets_info(id_or_path: str = typer.Argument(..., help="A dataset name (hopper-random) or an HDF5 path.")):
    """Transitions, episodes, return statistics and metadata of a dataset."""
    from drorl.data.registry import resolve

    dataset, name, path = resolve(id_or_path, generate_missing=False)
    table = Table(title=f"{name} ({path})")
    table.add_column("field")
    table.add_column("value")
    for key, value in dataset.summary().items():
        table.add_row(key, f"{value:,.2f}" if isinstance(value, float) else f"{value:,}")
    for key, value in sorted(dataset.metadata.items()):
        table.add_row(f"meta: {key}", json.dumps(value) if not isinstance(value, str) else value)
    console.print(table)


@datasets_app.command("import-minari")
def datasets_import_minari(
    dataset_id: str = typer.Argument(..., help="A Minari dataset id present locally ($MINARI_DATASETS_PATH)."),
    name: Optional[str] = typer.Option(None, help="Name to save it under in $DRORL_DATA (default: the id)."),
    env: Optional[str] = typer.Option(None, help="drorl task the data belongs to, if Minari's env spec is absent."),
):
    """Convert a local Minari dataset into drorl's HDF5 layout (nothing is downloaded)."""
    from drorl.data.hdf5 import write_hdf5
    from drorl.data.minari_io import import_minari
    from drorl.data.registry import dataset_path

    dataset = import_minari(dataset_id, task=env)
    path = write_hdf5(dataset, dataset_path(name or dataset_id.replace("/", "-")))
    console.print(f"wrote {path} ({len(dataset):,} transitions, {dataset.num_episodes} episodes)")


@datasets_app.command("export-minari")
def datasets_export_minari(
    id_or_path: str = typer.Argument(..., help="A drorl dataset name or HDF5 path."),
    dataset_id: Optional[str] = typer.Option(None, "--minari-id",
                                             help="Minari id to create (default drorl/TASK/KIND-v0)."),
):
    """Write a drorl dataset as a local Minari dataset."""
    from drorl.data.minari_io import export_minari
    from drorl.data.registry import resolve

    dataset, _, _ = resolve(id_or_path, generate_missing=False)
    created = export_minari(dataset, dataset_id)
    console.print(f"created Minari dataset {created}")


@zoo_app.command("list")
def zoo_list():
    """The zoo's policies with their measured returns."""
    from drorl import zoo

    table = Table(title=f"behaviour-policy zoo ({zoo.zoo_dir()})")
    for col in ("id", "task", "kind", "return (mean ± std)", "training steps"):
        table.add_column(col)
    for e in zoo.manifest():
        table.add_row(e.id, e.task, e.kind, f"{e.return_mean:.1f} ± {e.return_std:.1f}", f"{e.training_steps:,}")
    console.print(table)


@zoo_app.command("build")
def zoo_build(
    run_dir: Path = typer.Argument(..., help="A drorl train-online sac run directory with actor snapshots."),
    medium_fraction: float = typer.Option(1 / 3, help="Medium policy: return closest to this x the expert's."),
    replay_snapshots: int = typer.Option(5, help="Snapshots before the medium policy kept for medium-replay."),
    episodes: int = typer.Option(10, help="Stochastic episodes per measured return."),
    finalists: int = typer.Option(5, help="Best snapshots of the first round (30 episodes each) measured again; "
                                          "the expert is the best of them (0: the first round's best)."),
    finalist_episodes: int = typer.Option(100, help="Episodes per finalist in the second round."),
    behaviour_epsilon: Optional[float] = typer.Option(None, help="DQN: the exploration rate the shipped policies "
                                                                 "act with (default: the run's final one)."),
):
    """Pick expert, medium and replay snapshots from a SAC or DQN run and write them into the zoo ($DRORL_ZOO)."""
    from drorl.zoo.build import build

    for e in build(run_dir, medium_fraction=medium_fraction, replay_snapshots=replay_snapshots, episodes=episodes,
                   behaviour_epsilon=behaviour_epsilon, finalist_count=finalists, finalist_episodes=finalist_episodes):
        console.print(f"{e.id}: {e.return_mean:.1f} ± {e.return_std:.1f} (step {e.training_steps:,})")


@app.command("train")
def train_cmd(
    algo: str = typer.Argument(..., help=f"Offline algorithm: {', '.join(_algos.names('offline'))} "
                                         "(drorl algorithms shows their options)."),
    dataset: str = typer.Option(..., help="A dataset name (TASK-KIND, generated on first use) or an HDF5 path."),
    env: Optional[str] = typer.Option(None, help="Task to evaluate on (default: the dataset's metadata)."),
    steps: int = typer.Option(100_000, help="Gradient steps per seed."),
    seeds: str = typer.Option("0", help="Comma-separated seeds, trained together under vmap."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default runs/ALGO-DATASET). An existing "
                                                  "run there is resumed from its latest checkpoint."),
    eval_every: int = typer.Option(0, help="Evaluate on the nominal task every N steps (0: off)."),
    eval_episodes: int = typer.Option(5, help="Episodes per periodic evaluation."),
    log_every: int = typer.Option(1000, help="Updates per compiled call; one metrics line per seed each."),
    checkpoint_every: int = typer.Option(10_000, help="Steps between checkpoints (always one at the end)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field: --set policy.lr=3e-4 (repeatable; "
                                                    "drorl algorithms lists the fields)."),
    logger: str = typer.Option("jsonl", help="Where metrics go, comma-separated: jsonl (metrics.jsonl, always), "
                                             "tensorboard (OUT/tensorboard; drorl\\[tensorboard]), wandb (offline "
                                             "unless WANDB_MODE is set; drorl\\[wandb])."),
    quiet: bool = typer.Option(False, help="No progress bar."),
):
    """Train an offline algorithm on a dataset, for several seeds at once."""
    from drorl.runs import run_training

    run_dir = run_training(algo, dataset, env=env, steps=steps, seeds=_parse_seeds(seeds), out=out,
                           eval_every=eval_every, eval_episodes=eval_episodes, log_every=log_every,
                           checkpoint_every=checkpoint_every, overrides=_parse_sets(set_),
                           progress=not quiet, loggers=logger)
    console.print(f"run written to {run_dir}")


@app.command("train-dynamics")
def train_dynamics_cmd(
    dataset: str = typer.Option(..., help="A dataset name (TASK-KIND, generated on first use) or an HDF5 path."),
    seed: int = typer.Option(0, help="Seed of the ensemble's training (model.model_seed of the model-based "
                                     "algorithms)."),
    cache: Optional[Path] = typer.Option(None, help="Cache directory (default $DRORL_DATA/dynamics, where "
                                                    "drorl train looks)."),
    set_: list[str] = typer.Option([], "--set", help="Override a dynamics config field: --set num_members=5."),
    quiet: bool = typer.Option(False, help="No progress bar."),
):
    """Train a dataset's dynamics ensemble (or find it cached) and report its held-out NLL and MSE."""
    from drorl.runs import train_dynamics

    report, path = train_dynamics(dataset, seed=seed, overrides=_parse_sets(set_), cache=cache, progress=not quiet)
    table = Table(title=f"dynamics ensemble of {dataset}: held-out losses (standardised targets, "
                        f"{report['holdout_transitions']} transitions)")
    for col in ("member", "NLL", "MSE", "elite"):
        table.add_column(col)
    for m, (nll, mse) in enumerate(zip(report["holdout_nll"], report["holdout_mse"])):
        table.add_row(str(m), f"{nll:.4f}", f"{mse:.4f}", "yes" if m in report["elites"] else "")
    console.print(table)
    console.print(f"elites' mixture NLL {report['mixture_nll']:.4f} after {report['epochs']} epochs; "
                  f"model {path}")


@app.command("train-online")
def train_online_cmd(
    algo: str = typer.Argument("sac", help=f"Online algorithm: {' or '.join(_algos.names('online'))}."),
    env: str = typer.Option(..., help="Task: hopper, halfcheetah, walker2d, ant, inverted-pendulum (sac, ddpg), "
                                      "cartpole (dqn) or safe-unicycle, safe-double-integrator, safe-quadcopter "
                                      "(ddpg, dsrl)."),
    steps: int = typer.Option(1_000_000, help="Environment steps in total."),
    seed: int = typer.Option(0, help="Seed of environments, exploration and initialisation."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default runs/ALGO-ENV-sSEED); an existing run "
                                                  "there resumes from its latest checkpoint."),
    num_envs: int = typer.Option(1, help="Environments stepped together."),
    start_steps: int = typer.Option(10_000, help="Uniform random actions for this many steps first."),
    update_every: int = typer.Option(50, help="Env steps between compiled update calls."),
    updates_per_step: float = typer.Option(1.0, help="Gradient updates per environment step."),
    buffer_size: int = typer.Option(1_000_000, help="Replay buffer capacity."),
    eval_every: int = typer.Option(10_000, help="Env steps between evaluations and actor snapshots (0: off)."),
    eval_episodes: int = typer.Option(10, help="Episodes per evaluation."),
    checkpoint_every: int = typer.Option(50_000, help="Env steps between full checkpoints (with the buffer)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field: --set actor_lr=1e-3."),
    quiet: bool = typer.Option(False, help="No progress bar."),
):
    """Train an online algorithm (SAC, DQN): how drorl's behaviour policies are made. Resumable."""
    from drorl import algos
    from drorl.algos.base import config_with_overrides
    from drorl.envs import get_task
    from drorl.online import OnlineSettings, train_online

    if min(steps, num_envs, update_every, buffer_size, checkpoint_every, eval_episodes) <= 0 or eval_every < 0:
        raise DrorlError("--steps, --num-envs, --update-every, --buffer-size, --checkpoint-every and "
                         "--eval-episodes must be positive, --eval-every >= 0")
    config = config_with_overrides(algos.get(algo, "online").Config, _parse_sets(set_))
    task = get_task(env).name
    settings = OnlineSettings(env_steps=steps, seed=seed, num_envs=num_envs, start_steps=start_steps,
                              update_every=update_every, updates_per_step=updates_per_step,
                              buffer_size=buffer_size, eval_every=eval_every, eval_episodes=eval_episodes,
                              checkpoint_every=checkpoint_every)
    _, run_dir = train_online(algo, task, out or Path("runs") / f"{algo}-{task}-s{seed}", settings,
                              config=config, progress=not quiet)
    console.print(f"run written to {run_dir}")


@app.command("evaluate")
def evaluate_cmd(
    run_dir: str = typer.Argument(..., help="A run directory written by drorl train, or zoo:POLICY_ID."),
    sweep: str = typer.Option("", help="Perturbation sweeps, comma-separated: FAMILY (its built-in grid) or "
                                       "FAMILY=LO:HI:N (N evenly spaced values from LO to HI, both included; LO > "
                                       "HI decreases), e.g. gravity=-0.3:0.3:7,damping. Values: gravity, damping, "
                                       "mass, friction: a relative change p (the quantity times 1 + p); "
                                       "actuator_range: the control limit x (actions in -x..x; cartpole: the push "
                                       "force); frictionloss, stiffness: absolute (halfcheetah's stiffness: "
                                       "relative); action_noise: a variance."),
    grid2d: bool = typer.Option(False, "--grid2d", help="Evaluate the product grid of exactly two --sweep families "
                                                        "(both perturbations together in every cell) instead of one "
                                                        "sweep each; writes a heat map beside eval.json."),
    episodes: int = typer.Option(10, help="Episodes per seed and grid point."),
    env: Optional[str] = typer.Option(None, help="Task (default: the run's)."),
    seed: int = typer.Option(0, help="Seed of the evaluation episodes' initial states."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    out: Optional[Path] = typer.Option(None, help="eval.json path (default RUN_DIR/eval.json, "
                                                  "runs/zoo/POLICY_ID/eval.json for a zoo policy)."),
):
    """Evaluate a run (or a zoo policy) nominally and under perturbation sweeps; writes eval.json."""
    from drorl.report import print_eval_table
    from drorl.runs import default_eval_path, evaluate_run, heat_map_path

    out = out or default_eval_path(run_dir)
    result = evaluate_run(run_dir, sweep, episodes=episodes, env=env, seed=seed, out=out, grid2d=grid2d,
                          progress=not quiet)
    print_eval_table(result, console=console)
    console.print(f"wrote {out}" + (f" and {heat_map_path(out)}" if grid2d else ""))


@app.command("ope")
def ope_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory written by drorl train."),
    dataset: str = typer.Option(..., help="Dataset name (TASK-KIND) or HDF5 path to evaluate the policy from."),
    steps: int = typer.Option(50_000, help="DualDICE updates."),
    gamma: float = typer.Option(0.99, help="Discount of the estimated value."),
    seed_index: int = typer.Option(0, help="Which of the run's seeds to evaluate."),
    rollouts: int = typer.Option(0, help="Also roll the policy out this many episodes: Monte-Carlo value."),
):
    """Off-policy evaluation with DualDICE: a run's discounted value estimated from a fixed dataset."""
    from drorl.runs import off_policy_evaluation

    result = off_policy_evaluation(run_dir, dataset, steps=steps, gamma=gamma, seed_index=seed_index,
                                   rollouts=rollouts)
    line = f"DualDICE value (gamma {gamma}): {result['dualdice_value']:.2f}"
    if rollouts:
        line += (f"; Monte-Carlo over {rollouts} episodes: {result['monte_carlo_value']:.2f} "
                 f"± {result['monte_carlo_std']:.2f}")
    console.print(line)


@app.command("benchmark")
def benchmark_cmd(
    suite: str = typer.Argument(..., help="robust-il, ovr, model-based, safety or stackelberg"),
    profile: str = typer.Option("quick", help="quick, full, or a suite-specific ablation (robust-il: rho-sweep, "
                                              "balance, divergence, initial-states, time-weighting, halfcheetah-rate, "
                                              "capacity; ovr: verdict, lambda-sweep, iw; model-based: paper; "
                                              "stackelberg: study, paper)."),
    backend: str = typer.Option("local", help="local (this machine) or ray (pip install 'drorl\\[ray]'); "
                                              "Ray runs each job as a task with one XLA thread."),
    workers: Optional[int] = typer.Option(None, help="local: run the jobs on N worker processes, each pinned to "
                                                     "its share of the cores with one XLA thread (default: one "
                                                     "after another in this process, with XLA's own threads, as "
                                                     "the committed results were made)."),
    address: Optional[str] = typer.Option(None, help="ray: the cluster's address (default: start Ray here)."),
    gpus_per_job: float = typer.Option(0.0, help="ray: GPUs each job asks for (a paper profile on GPU nodes)."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default runs/benchmark/SUITE-PROFILE); "
                                                  "an interrupted benchmark resumes there."),
    tasks: Optional[str] = typer.Option(None, help="Comma-separated subset of the profile's tasks (run a long "
                                                   "profile one task at a time into the same --out)."),
):
    """Reproduce a paper's experiment: trains, evaluates, writes report.md and PNG figures."""
    from drorl.benchmarks import get_suite
    from drorl.execution import Backend

    report = get_suite(suite).run(profile, out or Path("runs") / "benchmark" / f"{suite}-{profile}",
                                  Backend(backend, workers, address, gpus_per_job), console=console,
                                  tasks=tasks.split(",") if tasks else None)
    console.print(f"report: {report}")


@app.command("plot")
def plot_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories (their eval.json or metrics.jsonl)."),
    out: Path = typer.Option(..., help="Output image (.png or .svg)."),
):
    """Robustness curves (from eval.json) or learning curves (from metrics.jsonl) of runs, on shared axes."""
    from drorl.plot import plot_runs

    console.print(f"wrote {plot_runs(run_dirs, out)}")


@app.command("report")
def report_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="Finished run directories (their eval.json and config.json), "
                                                    "or directories above them (a sweep's, a benchmark's)."),
    out: Path = typer.Option(Path("runs/report"), help="Directory for report.md, profiles.png and "
                                                       "aggregates.json."),
    reference: Optional[str] = typer.Option(None, help="Method whose probability of improvement over each other "
                                                       "method is reported (default: every pair)."),
):
    """Aggregate scores of any set of runs: median, IQM, mean and optimality gap with stratified-bootstrap
    intervals, probabilities of improvement and performance profiles."""
    from drorl.run_report import write_run_report

    console.print(f"report: {write_run_report(run_dirs, out, reference)}")


@app.command("sweep")
def sweep_cmd(
    config: Path = typer.Argument(..., help="Sweep config (YAML): algorithms, datasets, set (swept config fields), "
                                            "seeds, steps, episodes, families, env, vmap_seeds."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default runs/sweeps/CONFIG_NAME); a sweep "
                                                  "started again there runs only the cells without eval.json."),
    backend: str = typer.Option("local", help="local (a process pool, one core per worker) or ray "
                                              "(pip install 'drorl\\[ray]')."),
    workers: Optional[int] = typer.Option(None, help="local: worker processes (default: one per usable core)."),
    address: Optional[str] = typer.Option(None, help="ray: the cluster's address (default: start Ray here)."),
    gpus_per_cell: float = typer.Option(0.0, help="ray: GPUs each cell asks for."),
    quiet: bool = typer.Option(False, help="No progress bar."),
):
    """Train and evaluate a grid of runs, then write their aggregate report (report.md, profiles.png)."""
    from drorl.sweep import sweep

    result = sweep(config, out, backend, workers=workers, address=address, gpus_per_cell=gpus_per_cell,
                   progress=not quiet)
    console.print(f"{len(result.ran)} runs trained, {len(result.skipped)} already done; report: {result.report}")


@app.command("quickstart")
def quickstart_cmd(
    out: Path = typer.Option(Path("runs/quickstart"), help="Where to write the runs, the report and the plot."),
):
    """BC vs DR-BC vs BE-DROIL on expert demos of a small task, under perturbations: table + plot (~3 min)."""
    from drorl.quickstart import quickstart

    quickstart(out, console=console)


@app.command("algorithms")
def algorithms_cmd():
    """List the registered algorithms: kind, action spaces, summary and every config field's default."""
    from rich.markup import escape

    from drorl.algos.base import config_fields

    for name in _algos.names():
        entry = _algos.entry(name)
        defaults = _algos.get(name).Config()
        fields = []
        for path in config_fields(type(defaults)):
            value = defaults
            for part in path.split("."):
                value = getattr(value, part)
            fields.append(f"{path}={value!r}")
        console.print(f"[bold]{name}[/bold] ({entry.kind}, {'/'.join(entry.action_spaces)}): {entry.summary}")
        console.print(escape("    " + ", ".join(fields)))


def _enable_compilation_cache() -> None:
    """Reuse compiled programs across runs (JAX's persistent cache), unless the user configured it."""
    import os

    from drorl.data.registry import data_dir

    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(data_dir() / "jax-cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


def main() -> None:
    _enable_compilation_cache()
    try:
        app()
    except DrorlError as exc:
        print(f"drorl: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("drorl: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
