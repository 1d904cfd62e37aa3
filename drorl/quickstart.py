"""``drorl quickstart``: the whole pipeline in miniature, on the small task, in about five minutes.

1. expert demonstrations on InvertedPendulum-v5 from the scripted LQR expert (nothing to train);
2. behaviour cloning, three seeds at once;
3. evaluation at nominal dynamics and along perturbation sweeps;
4. a table in the terminal, a markdown report and a PNG of the robustness curves.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from drorl.data.generate import generate
from drorl.data.hdf5 import write_hdf5
from drorl.io_utils import write_bytes_atomic
from drorl.plot import plot_runs
from drorl.report import eval_markdown, print_eval_table
from drorl.runs import evaluate_run, run_training

TASK = "inverted-pendulum"
FAMILIES = "gravity,damping,stiffness,action_noise"


def quickstart(out: Path, steps: int = 5000, episodes: int = 5, demos: int = 10,
               seeds: tuple[int, ...] = (0, 1, 2), console: Console | None = None) -> dict:
    console = console or Console()
    out = Path(out)
    console.rule(f"1/4  {demos} expert demonstrations on {TASK} (scripted LQR expert)")
    dataset = generate(TASK, "expert-demos", episodes=demos, seed=0)
    data_path = write_hdf5(dataset, out / f"{TASK}-expert-demos.hdf5")
    console.print(f"{data_path}: {len(dataset):,} transitions, expert return "
                  f"{dataset.metadata['behavior_return_mean']:.1f}")

    console.rule(f"2/4  behaviour cloning, seeds {','.join(map(str, seeds))}, {steps:,} steps")
    run_dir = run_training("bc", str(data_path), env=TASK, steps=steps, seeds=seeds, out=out / "bc",
                           eval_every=0, eval_episodes=episodes, log_every=min(1000, steps),
                           checkpoint_every=steps, overrides={})

    console.rule(f"3/4  evaluation under perturbations: {FAMILIES}")
    result = evaluate_run(run_dir, FAMILIES, episodes=episodes)

    console.rule("4/4  results")
    print_eval_table(result, console=console)
    plot = plot_runs([run_dir], out / "robustness.png")
    report = out / "report.md"
    write_bytes_atomic(report, (f"# drorl quickstart: BC on {TASK}\n\n"
                                f"Dataset `{data_path.name}`, {len(dataset):,} transitions; "
                                f"{steps:,} steps, seeds {list(seeds)}; {episodes} episodes per point.\n\n"
                                + eval_markdown(result) + f"\n![robustness curves]({plot.name})\n").encode())
    console.print(f"plot: {plot}\nreport: {report}\nrun: {run_dir}")
    return result
