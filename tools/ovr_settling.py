"""How long DualDICE takes to settle inside OVR on the verdict profile's datasets (issue 21).

For each dataset and ratio learning rate, OVR trains with its penalty off throughout (``ratio.warmup`` =
the whole run: BCQ learns as plain BCQ while DualDICE tracks BCQ's current policy, exactly the warm-up's
computation) and records, per chunk of updates, the two diagnostics OVR logs: the raw ratio mean under
the data (``dice/ratio_mean``, 1 at the saddle point) and DualDICE's value estimate E_D[w r] / (1 - g).
At a few checkpoints the current policy is rolled out in the task (one environment, the policy's own
acting rule, sum_t g^t r_t) to give the Monte-Carlo value the estimate should match. At the end, the
raw ratio along the episode: its mean by time step t of the data's episodes (a ratio of the discounted
occupancy to data spread evenly over time carries the discount profile g^t).

    python -m tools.ovr_settling --datasets hopper-medium,walker2d-medium --lrs 3e-4,1e-3 --steps 10000

Writes ``OUT/settling.json`` (one entry per dataset and learning rate, each saved as it finishes, so a
killed run restarts only the unfinished ones), ``OUT/settling.md`` and ``OUT/settling.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from drorl.algos import bcq, dualdice, ovr
from drorl.data.registry import resolve
from drorl.evaluate import run_episodes_one_env
from drorl.io_utils import write_bytes_atomic, write_json_atomic
from drorl.scores import spec_for, task_of
from drorl.train import device_data, init_states, make_train_chunk

SETTLED = 0.1  # |ratio mean - 1| at or below this counts as settled


def monte_carlo_value(state: ovr.State, task: str, episodes: int, gamma: float, seed: int) -> tuple[float, float]:
    """Mean and standard error of sum_t g^t r_t of the policy OVR hands DualDICE (BCQ's acting rule)."""
    act = jax.jit(lambda obs, key: bcq.act(state.base, obs[None], key)[0])
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 1_000 * episodes + 1))
    returns = run_episodes_one_env(lambda obs: np.asarray(act(obs, next(keys))), task, None, episodes,
                                   seed=seed, gamma=gamma)
    return float(returns.mean()), float(returns.std(ddof=1) / np.sqrt(episodes))


def ratio_by_time_step(state: ovr.State, dataset: Any, bins: int = 20, max_rows: int = 200_000) -> dict[str, list]:
    """The raw ratio's mean in ``bins`` equal ranges of the episode time step t (the first ``max_rows`` rows)."""
    rows = min(len(dataset), max_rows)
    w = np.asarray(jax.jit(dualdice.ratio)(state.dice, jnp.asarray(dataset.observations[:rows]),
                                           jnp.asarray(dataset.actions[:rows])))
    t = dataset.time_steps[:rows]
    edges = np.linspace(0, t.max() + 1, bins + 1)
    which = np.digitize(t, edges) - 1
    means = [float(w[which == b].mean()) if np.any(which == b) else float("nan") for b in range(bins)]
    return {"t_start": edges[:-1].tolist(), "mean_ratio": means, "mean_ratio_overall": float(w.mean())}


def settle(dataset_id: str, lr: float, steps: int, chunk_size: int, mc_every: int, mc_episodes: int,
           seed: int) -> dict[str, Any]:
    dataset, _, _ = resolve(dataset_id)
    task = task_of(dataset, None, dataset_id)
    config = ovr.Config(ratio=ovr.RatioConfig(lr=lr, warmup=steps),
                        reward_scale=float(np.mean(np.abs(dataset.rewards))) or 1.0)
    gamma = config.base.gamma
    data = device_data(dataset)
    states, rngs = init_states(ovr, config, spec_for(dataset, task), [seed])
    chunk = make_train_chunk(ovr, chunk_size)
    curve, checks, started = [], [], time.process_time()
    for done in range(chunk_size, steps + 1, chunk_size):
        states, rngs, metrics = chunk(states, rngs, data)
        curve.append({"step": done, "ratio_mean": float(metrics["dice/ratio_mean"][0]),
                      "value_estimate": float(metrics["dice/value_estimate"][0])})
        if done % mc_every == 0:
            state = jax.tree_util.tree_map(lambda x: x[0], states)
            value, stderr = monte_carlo_value(state, task, mc_episodes, gamma, seed=1_000 + done)
            checks.append({"step": done, "monte_carlo": value, "stderr": stderr,
                           "value_estimate": curve[-1]["value_estimate"]})
        print(f"{dataset_id} lr={lr:g}: {done:,}/{steps:,} ratio mean {curve[-1]['ratio_mean']:.3f} "
              f"value estimate {curve[-1]['value_estimate']:.1f}"
              + (f" monte carlo {checks[-1]['monte_carlo']:.1f}" if checks and checks[-1]["step"] == done else ""),
              flush=True)
    settled = next((c["step"] for i, c in enumerate(curve)
                    if all(abs(d["ratio_mean"] - 1.0) <= SETTLED for d in curve[i:])), None)
    return {"dataset": dataset_id, "task": task, "lr": lr, "steps": steps, "chunk": chunk_size, "seed": seed,
            "gamma": gamma, "curve": curve, "monte_carlo": checks, "settled_at": settled,
            "along_episode": ratio_by_time_step(jax.tree_util.tree_map(lambda x: x[0], states), dataset),
            "cpu_seconds": time.process_time() - started}


def report(cells: list[dict[str, Any]]) -> str:
    lines = ["# DualDICE settling inside OVR", "",
             f"Penalty off throughout (BCQ as plain BCQ, DualDICE tracking its policy); settled = the ratio mean "
             f"stays within {SETTLED} of 1 from that chunk on. Monte Carlo: the policy's discounted return "
             "(mean ± standard error over episodes) against DualDICE's estimate at the same chunk.", "",
             "| dataset | ratio lr | settled at | final ratio mean | estimate / Monte Carlo at checkpoints | CPU s |",
             "|---|---|---|---|---|---|"]
    for c in cells:
        checks = "; ".join(f"{m['step']:,}: {m['value_estimate']:.1f} / {m['monte_carlo']:.1f} ± {m['stderr']:.1f}"
                           for m in c["monte_carlo"])
        settled = f"{c['settled_at']:,}" if c["settled_at"] else f"not in {c['steps']:,}"
        lines.append(f"| {c['dataset']} | {c['lr']:g} | {settled} | {c['curve'][-1]['ratio_mean']:.3f} | {checks} "
                     f"| {c['cpu_seconds']:.0f} |")
    lines += ["", "Raw ratio along the episode (mean by range of time step t, final policy):", ""]
    for c in cells:
        a = c["along_episode"]
        shown = ", ".join(f"t>={t:.0f}: {m:.2f}" for t, m in list(zip(a["t_start"], a["mean_ratio"]))[::4])
        lines.append(f"- {c['dataset']} lr {c['lr']:g}: {shown} (overall {a['mean_ratio_overall']:.2f})")
    return "\n".join(lines) + "\n"


def plot(cells: list[dict[str, Any]], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for c in cells:
        name = f"{c['dataset']} lr {c['lr']:g}"
        steps = [p["step"] for p in c["curve"]]
        axes[0].plot(steps, [p["ratio_mean"] for p in c["curve"]], label=name)
        line, = axes[1].plot(steps, [p["value_estimate"] for p in c["curve"]], label=name)
        axes[1].errorbar([m["step"] for m in c["monte_carlo"]], [m["monte_carlo"] for m in c["monte_carlo"]],
                         [1.96 * m["stderr"] for m in c["monte_carlo"]], fmt="o", color=line.get_color())
        a = c["along_episode"]
        axes[2].plot(a["t_start"], a["mean_ratio"], label=name)
    axes[0].axhline(1.0, color="grey", lw=0.8)
    axes[0].set(xlabel="updates", ylabel="raw ratio mean under the data", title="DualDICE ratio mean")
    axes[1].set(xlabel="updates", ylabel="discounted value", title="estimate (lines) vs Monte Carlo (points, 95 %)")
    axes[2].set(xlabel="time step t in episode", ylabel="mean raw ratio", title="ratio along the episode")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="hopper-medium,walker2d-medium")
    parser.add_argument("--lrs", default="3e-4,1e-3")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--mc-every", type=int, default=2_500)
    parser.add_argument("--mc-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("tools/results/ovr-settling"))
    args = parser.parse_args(argv)
    path = args.out / "settling.json"
    cells = json.loads(path.read_text()) if path.is_file() else []
    for dataset_id in args.datasets.split(","):
        for lr in map(float, args.lrs.split(",")):
            if any(c["dataset"] == dataset_id and c["lr"] == lr and c["steps"] == args.steps for c in cells):
                continue
            cells.append(settle(dataset_id, lr, args.steps, args.chunk, args.mc_every, args.mc_episodes, args.seed))
            write_json_atomic(path, cells)
            write_bytes_atomic(args.out / "settling.md", report(cells).encode())
            plot(cells, args.out / "settling.png")
    print(report(cells))


if __name__ == "__main__":
    main()
