"""Checks of the shipped behaviour-policy zoo (issue acceptance: returns reproduce the manifest).

    python -m tools.zoo_check                    # every zoo policy, 10 fresh episodes each
    python -m tools.zoo_check --datasets 100000  # also generate medium and expert data per task

For every policy: its stochastic return over 10 episodes with evaluation seeds other than the
manifest's, against the manifest's mean (pass: within 10 %), and the gap as a share of the random-to-expert range (the
relative gap of a near-random snapshot, whose return is near 0, means little). With --datasets N: the mean episode
return of a freshly generated medium / expert dataset of N transitions against the manifest, and
the seconds the generation took. Writes tools/results/zoo-check.json and prints a table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from drorl import zoo
from drorl.data.generate import generate, reference_returns
from drorl.io_utils import write_json_atomic
from drorl.runs import evaluate_zoo_policy


def _relative_gap(measured: float, manifest: float) -> float:
    return abs(measured - manifest) / max(abs(manifest), 1e-9)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--datasets", type=int, default=0, help="transitions per generated dataset (0: skip)")
    parser.add_argument("--tasks", default="", help="comma-separated tasks (default: all in the zoo)")
    parser.add_argument("--out", type=Path, default=Path("tools/results/zoo-check.json"))
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t] or sorted({e.task for e in zoo.manifest()})
    rows, datasets = [], []
    # the random-to-expert range, for gaps of near-random snapshots whose relative gap is meaningless
    ranges = {t: reference_returns(t) for t in tasks}
    for entry in [e for e in zoo.manifest() if e.task in tasks]:
        result = evaluate_zoo_policy(entry.id, "", episodes=args.episodes, seed=777, progress=False,
                                     out=Path("runs") / "zoo" / entry.id / "eval.json")
        measured = result["nominal"]["return_mean"]
        span = ranges[entry.task]["ref_max_score"] - ranges[entry.task]["ref_min_score"]
        rows.append({"id": entry.id, "manifest": entry.return_mean, "measured": measured,
                     "relative_gap": _relative_gap(measured, entry.return_mean),
                     "normalised_gap": abs(measured - entry.return_mean) / span})
    if args.datasets:
        for task in tasks:
            for kind in ("medium", "expert"):
                entry = zoo.entries(task, kind)[-1]
                start = time.perf_counter()
                ds = generate(task, kind, transitions=args.datasets, seed=1, progress=False)
                seconds = time.perf_counter() - start
                whole = ds.episode_returns[:-1] if ds.num_episodes > 1 else ds.episode_returns  # last may be cut
                mean = float(whole.mean())
                datasets.append({"task": task, "kind": kind, "transitions": len(ds), "seconds": seconds,
                                 "episode_return": mean, "manifest": entry.return_mean,
                                 "relative_gap": _relative_gap(mean, entry.return_mean)})
    table = Table(title="zoo policies: manifest vs fresh evaluation")
    for col in ("policy", "manifest", "measured", "gap", "within 10 %", "gap, % of random-expert range"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["id"], f"{r['manifest']:.1f}", f"{r['measured']:.1f}", f"{100 * r['relative_gap']:.1f} %",
                      "yes" if r["relative_gap"] <= 0.1 else "NO", f"{100 * r['normalised_gap']:.1f}")
    Console().print(table)
    for d in datasets:
        Console().print(f"{d['task']}-{d['kind']}: {d['transitions']:,} transitions in {d['seconds']:.0f} s, "
                        f"episode return {d['episode_return']:.1f} vs manifest {d['manifest']:.1f} "
                        f"({100 * d['relative_gap']:.1f} %)")
    result = {"policies": rows, "datasets": datasets}
    write_json_atomic(args.out, result)
    return result


if __name__ == "__main__":
    main()
