"""BCQ's learning curve on one dataset, acting with 10 and with 100 candidate actions (issue 21).

One seed trains BCQ for ``--steps`` updates (hopper-medium, 300k by default); every ``--eval-every``
updates the same parameters are evaluated twice on the nominal task, once acting with the best of 10
decoded and perturbed actions (drorl's committed results) and once with 100 (the reference
implementation's acting rule), each call of the policy with its own key. Scores are normalised by the
dataset's reference returns, to compare with the published BCQ numbers on D4RL.

    python -m tools.bcq_fidelity --dataset hopper-medium --steps 300000 --out ~/.cache/drorl/bcq-fidelity

Resumable: the training state is checkpointed at every evaluation and ``OUT/curve.json`` holds the
evaluations so far; a restarted run continues from the last one. Writes ``OUT/curve.md`` and
``OUT/curve.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from drorl import checkpoint
from drorl.algos import bcq
from drorl.data.registry import resolve
from drorl.evaluate import run_episodes
from drorl.io_utils import write_bytes_atomic, write_json_atomic
from drorl.scores import normalized_score, reference_scores, spec_for, task_of
from drorl.train import device_data, init_states, make_train_chunk, policy_fn

ACTING_RULES = (10, 100)  # candidate actions per state when acting


def evaluate(states: bcq.State, task: str, episodes: int, ref: tuple[float, float]) -> dict[str, float]:
    """Normalised mean return and standard error for each acting rule, on the same episode seeds."""
    scores = {}
    for n in ACTING_RULES:
        acting = states.replace(config=dataclasses.replace(states.config, act_samples=n))
        returns = normalized_score(run_episodes(policy_fn(bcq, acting), 1, task, [None], episodes)[0, 0], *ref)
        scores[f"act{n}"] = float(returns.mean())
        scores[f"act{n}_stderr"] = float(returns.std(ddof=1) / np.sqrt(episodes))
    return scores


def report(record: dict[str, Any]) -> str:
    lines = [f"# BCQ on {record['dataset']}: learning curve, acting with 10 and 100 candidates", "",
             f"One seed ({record['seed']}), {record['episodes']} evaluation episodes per point (normalised score, "
             f"mean ± standard error; references {record['ref'][0]:.1f} / {record['ref'][1]:.1f}, "
             f"{record['ref_source']}).", "",
             "| updates | act 10 | act 100 | CPU s so far |", "|---|---|---|---|"]
    lines += [f"| {p['step']:,} | {p['act10']:.1f} ± {p['act10_stderr']:.1f} | {p['act100']:.1f} ± "
              f"{p['act100_stderr']:.1f} | {p['cpu_seconds']:.0f} |" for p in record["curve"]]
    return "\n".join(lines) + "\n"


def plot(record: dict[str, Any], path: Path) -> None:
    from drorl.plot import plt, save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [p["step"] for p in record["curve"]]
    for n in ACTING_RULES:
        ax.errorbar(steps, [p[f"act{n}"] for p in record["curve"]],
                    [1.96 * p[f"act{n}_stderr"] for p in record["curve"]], marker="o", capsize=3,
                    label=f"acting with {n} candidates")
    ax.set(xlabel="updates", ylabel="normalised score", title=f"BCQ on {record['dataset']} (seed {record['seed']})")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="hopper-medium")
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--eval-every", type=int, default=25_000)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("tools/results/bcq-fidelity"))
    args = parser.parse_args(argv)
    if args.eval_every % args.chunk or args.steps % args.eval_every:
        parser.error("--eval-every must be a multiple of --chunk and divide --steps")

    dataset, _, _ = resolve(args.dataset)
    task = task_of(dataset, None, args.dataset)
    ref_min, ref_max, ref_source = reference_scores(dataset.metadata, task)
    path = args.out / "curve.json"
    record = json.loads(path.read_text()) if path.is_file() else {
        "dataset": args.dataset, "seed": args.seed, "episodes": args.episodes, "ref": [ref_min, ref_max],
        "ref_source": ref_source, "curve": []}
    states, rngs = init_states(bcq, bcq.Config(), spec_for(dataset, task), [args.seed])
    step = 0
    latest = checkpoint.latest(args.out / "checkpoints")
    if latest is not None:
        step, (states, rngs) = checkpoint.load(latest, (states, rngs))
    record["curve"] = [p for p in record["curve"] if p["step"] <= step]
    spent = record["curve"][-1]["cpu_seconds"] if record["curve"] else 0.0
    started = time.process_time()
    data = device_data(dataset)
    chunk = make_train_chunk(bcq, args.chunk)
    while step < args.steps:
        states, rngs, metrics = chunk(states, rngs, data)
        step += args.chunk
        if step % args.eval_every == 0:
            point = {"step": step, "q_mean": float(metrics["q_mean"][0]),
                     **evaluate(states, task, args.episodes, (ref_min, ref_max)),
                     "cpu_seconds": spent + time.process_time() - started}
            record["curve"].append(point)
            write_json_atomic(path, record)  # before the checkpoint: a point past it is dropped on resume
            checkpoint.save(args.out / "checkpoints", step, (states, rngs))
            write_bytes_atomic(args.out / "curve.md", report(record).encode())
            plot(record, args.out / "curve.png")
            print(f"{step:,}/{args.steps:,}: act 10 {point['act10']:.1f}, act 100 {point['act100']:.1f}, "
                  f"Q {point['q_mean']:.1f}", flush=True)
    print(report(record))


if __name__ == "__main__":
    main()
