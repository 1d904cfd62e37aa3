"""How long DualDICE takes to settle inside OVR on the verdict profile's datasets (issue 21).

For each dataset and ratio learning rate, OVR trains with its penalty off throughout (``ratio.warmup`` =
the whole run: BCQ learns as plain BCQ while DualDICE tracks BCQ's current policy, exactly the warm-up's
computation) and records, per chunk of updates, the diagnostics OVR logs: the raw ratio mean under the
data (``dice/ratio_mean``; at the saddle point the occupancy's mass 1 - E[g^T]) and DualDICE's value
estimate E_D[w r] / (1 - g) from the raw ratios and from the processed ones OVR's penalty multiplies. At a
few checkpoints the current policy is rolled out in the task (one environment, the policy's own acting
rule, sum_t g^t r_t) to give the Monte-Carlo value the estimates should match, and both estimates are
recomputed over the data's first 200k rows. At the end, the ratio along the episode: its mean by time step
t of the data's episodes (a ratio of the discounted occupancy to data spread evenly over time carries the
discount profile g^t).

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

SETTLED = 0.1  # |raw estimate / Monte Carlo - 1| at or below this counts as settled


def monte_carlo_value(state: ovr.State, task: str, episodes: int, gamma: float, seed: int) -> tuple[float, float]:
    """Mean and standard error of sum_t g^t r_t of the policy OVR hands DualDICE (BCQ's acting rule)."""
    act = jax.jit(lambda obs, key: bcq.act(state.base, obs[None], key)[0])
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 1_000 * episodes + 1))
    returns = run_episodes_one_env(lambda obs: np.asarray(act(obs, next(keys))), task, None, episodes,
                                   seed=seed, gamma=gamma)
    return float(returns.mean()), float(returns.std(ddof=1) / np.sqrt(episodes))


def along_episode(state: ovr.State, dataset: Any, gamma: float, bins: int = 20,
                  max_rows: int = 200_000) -> dict[str, Any]:
    """The ratio by range of the episode time step t (the first ``max_rows`` rows), raw and processed.

    Beside them the discount profile a ratio of the policy's discounted occupancy to data spread evenly
    over time carries, (1 - g) g^t L (L the data's mean episode length; exact when the policy survives as
    long as the data's episodes), and DualDICE's value estimate from all these rows, raw and processed.
    """
    rows = min(len(dataset), max_rows)
    raw = np.asarray(jax.jit(dualdice.ratio)(state.dice, jnp.asarray(dataset.observations[:rows]),
                                             jnp.asarray(dataset.actions[:rows])))
    processed = np.asarray(ovr.processed_ratios(jnp.asarray(raw), state.config.ratio.max_ratio,
                                                state.config.ratio.self_normalise))
    t = dataset.time_steps[:rows]
    profile = (1.0 - gamma) * gamma ** t * rows / max(int(np.sum(t == 0)), 1)
    which = np.digitize(t, np.linspace(0, t.max() + 1, bins + 1)) - 1

    def by_bin(w: np.ndarray) -> list[float]:
        return [float(w[which == b].mean()) if np.any(which == b) else float("nan") for b in range(bins)]

    rewards = dataset.rewards[:rows]
    return {"t_start": np.linspace(0, t.max() + 1, bins + 1)[:-1].tolist(), "mean_ratio": by_bin(raw),
            "processed_ratio": by_bin(processed), "discount_profile": by_bin(profile),
            "mean_ratio_overall": float(raw.mean()),
            "value_estimate": float(np.mean(raw * rewards) / (1.0 - gamma)),
            "processed_value_estimate": float(np.mean(processed * rewards) / (1.0 - gamma))}


def checkpoint_series(cell: dict[str, Any]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Checkpoint steps, DualDICE's raw estimate averaged over the chunk ending there (the logged diagnostic)
    and the Monte-Carlo value of the policy at that step."""
    chunk_estimate = {p["step"]: p["value_estimate"] for p in cell["curve"]}
    steps = [m["step"] for m in cell["monte_carlo"]]
    return (steps, np.array([chunk_estimate[s] for s in steps]),
            np.array([m["monte_carlo"] for m in cell["monte_carlo"]]))


def level_error(estimates: np.ndarray, monte_carlo: np.ndarray) -> float:
    """Mean estimate over mean Monte-Carlo value, minus 1, over a run of checkpoints."""
    return float(np.mean(estimates) / np.mean(monte_carlo) - 1.0)


def settled_at(cell: dict[str, Any], window: int = 3) -> int | None:
    """The first checkpoint from which on the raw estimate's level stays within SETTLED of Monte Carlo's: every
    ``window`` consecutive checkpoints from there to the end have |level_error| <= SETTLED.

    Levels over a few checkpoints, not each one, because the policy's value moves between checkpoints (a
    hopper policy that falls early at one and not at the next) faster than a ratio estimator tracks it. The
    raw estimate, since E_D[w r] / (1 - g) is the value at DualDICE's saddle point even where episodes end;
    the processed one then overstates it by 1 / E_D[w] (self-normalising assumes E_D[w] = 1).
    """
    steps, estimates, monte_carlo = checkpoint_series(cell)
    starts = range(max(len(steps) - window + 1, 0))
    within = [abs(level_error(estimates[j:j + window], monte_carlo[j:j + window])) <= SETTLED for j in starts]
    return next((steps[i] for i in starts if all(within[i:])), None)


def label(cell: dict[str, Any]) -> str:
    """The cell's dataset and ratio settings (p named when it is not DualDICE's default 1.5, zeta squared)."""
    p = cell.get("p", 1.5)
    return (f"{cell['dataset']} lr {cell['lr']:g}" + (f" p {p:g}" if p != 1.5 else "")
            + (" positive" if cell.get("positive") else ""))


def settle(dataset_id: str, lr: float, p: float, positive: bool, steps: int, chunk_size: int, mc_every: int,
           mc_episodes: int, seed: int) -> dict[str, Any]:
    dataset, _, _ = resolve(dataset_id)
    task = task_of(dataset, None, dataset_id)
    config = ovr.Config(ratio=ovr.RatioConfig(lr=lr, p=p, positive=positive, warmup=steps),
                        reward_scale=float(np.mean(np.abs(dataset.rewards))) or 1.0)
    gamma = config.base.gamma
    data = device_data(dataset)
    states, rngs = init_states(ovr, config, spec_for(dataset, task), [seed])
    chunk = make_train_chunk(ovr, chunk_size)
    curve, checks, started = [], [], time.process_time()
    for done in range(chunk_size, steps + 1, chunk_size):
        states, rngs, metrics = chunk(states, rngs, data)
        curve.append({"step": done, "ratio_mean": float(metrics["dice/ratio_mean"][0]),
                      "value_estimate": float(metrics["dice/value_estimate"][0]),
                      "processed_value_estimate": float(metrics["value_estimate"][0])})
        line = (f"{label({'dataset': dataset_id, 'lr': lr, 'p': p, 'positive': positive})}: {done:,}/{steps:,} "
                f"ratio mean {curve[-1]['ratio_mean']:.3f} "
                f"value estimate raw {curve[-1]['value_estimate']:.1f} "
                f"processed {curve[-1]['processed_value_estimate']:.1f}")
        if done % mc_every == 0:
            state = jax.tree_util.tree_map(lambda x: x[0], states)
            value, stderr = monte_carlo_value(state, task, mc_episodes, gamma, seed=1_000 + done)
            profile = along_episode(state, dataset, gamma)
            checks.append({"step": done, "monte_carlo": value, "stderr": stderr,
                           "value_estimate": profile["value_estimate"],
                           "processed_value_estimate": profile["processed_value_estimate"]})
            line += (f" | all rows: raw {profile['value_estimate']:.1f} processed "
                     f"{profile['processed_value_estimate']:.1f}, monte carlo {value:.1f}")
        print(line, flush=True)
    return {"dataset": dataset_id, "task": task, "lr": lr, "p": p, "positive": positive, "steps": steps,
            "chunk": chunk_size, "seed": seed,
            "gamma": gamma, "curve": curve, "monte_carlo": checks,
            "along_episode": along_episode(jax.tree_util.tree_map(lambda x: x[0], states), dataset, gamma),
            "cpu_seconds": time.process_time() - started}


def report(cells: list[dict[str, Any]]) -> str:
    lines = ["# DualDICE settling inside OVR", "",
             "Penalty off throughout (BCQ as plain BCQ, DualDICE tracking its policy); one seed, the same BCQ "
             "run for every ratio setting on a dataset. At each checkpoint, the Monte-Carlo value of the current "
             "policy (discounted return over episodes) against DualDICE's raw estimate E_D[w r] / (1 - g) averaged "
             "over the chunk of updates ending there (the logged `dice/value_estimate`). Settled: from that "
             f"checkpoint on, the estimate's level stays within {SETTLED:.0%} of Monte Carlo's (means over every 3 "
             "consecutive checkpoints; the policy's value moves between checkpoints faster than any ratio "
             "estimator tracks it). The raw estimate, because at DualDICE's saddle point it is "
             "the value even where episodes end; the estimate from the processed ratios (clipped, self-normalised: "
             "what OVR's penalty multiplies) overstates it by 1 / E_D[w] there, and the raw ratio mean under the "
             "data settles at the occupancy's mass 1 - E[g^T], not 1.", "",
             "| dataset and ratio settings | settled at | raw ratio mean, last chunk | estimate / Monte Carlo, "
             "second half (level error) | processed estimate, second half | CPU s |", "|---|---|---|---|---|---|"]
    for c in cells:
        steps, estimates, monte_carlo = checkpoint_series(c)
        half = len(steps) // 2
        processed = np.mean([m["processed_value_estimate"] for m in c["monte_carlo"][half:]])
        step = settled_at(c)
        settled = f"{step:,}" if step else f"not in {c['steps']:,}"
        lines.append(f"| {label(c)} | {settled} | {c['curve'][-1]['ratio_mean']:.2f} | {np.mean(estimates[half:]):.1f}"
                     f" / {np.mean(monte_carlo[half:]):.1f} ({level_error(estimates[half:], monte_carlo[half:]):+.0%})"
                     f" | {processed:.1f} | {c['cpu_seconds']:.0f} |")
    for dataset in dict.fromkeys(c["dataset"] for c in cells):
        group = [c for c in cells if c["dataset"] == dataset]
        steps, _, monte_carlo = checkpoint_series(group[0])
        lines += ["", f"{dataset}, per checkpoint: Monte Carlo (± standard error) and each setting's raw estimate:",
                  "", "| updates | Monte Carlo | " + " | ".join(label(c) for c in group) + " |",
                  "|---|---|" + "---|" * len(group)]
        for i, step in enumerate(steps):
            row = [f"{checkpoint_series(c)[1][i]:.1f}" if i < len(c["monte_carlo"]) else "" for c in group]
            lines.append(f"| {step:,} | {monte_carlo[i]:.1f} ± {group[0]['monte_carlo'][i]['stderr']:.1f} | "
                         + " | ".join(row) + " |")
    lines += ["", "Ratio along the episode (final policy; mean by range of time step t): raw / processed / the "
              "discount profile (1 - g) g^t L a correct ratio carries where the policy survives as long as the "
              "data's episodes:", ""]
    for c in cells:
        a = c["along_episode"]
        shown = ", ".join(f"t>={t:.0f}: {m:.2f} / {w:.2f} / {d:.2f}" for t, m, w, d in list(
            zip(a["t_start"], a["mean_ratio"], a["processed_ratio"], a["discount_profile"]))[::4])
        lines.append(f"- {label(c)}: {shown} (raw overall {a['mean_ratio_overall']:.2f})")
    return "\n".join(lines) + "\n"


def plot(cells: list[dict[str, Any]], path: Path) -> None:
    from drorl.plot import plt, save_figure

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for c in cells:
        name = label(c)
        steps = [p["step"] for p in c["curve"]]
        line, = axes[0].plot(steps, [p["ratio_mean"] for p in c["curve"]], label=name)
        checks = c["monte_carlo"]
        axes[1].plot(steps, [p["value_estimate"] for p in c["curve"]], color=line.get_color(), label=name)
        axes[1].plot(steps, [p["processed_value_estimate"] for p in c["curve"]], color=line.get_color(), ls=":",
                     lw=0.8)
        axes[1].errorbar([m["step"] for m in checks], [m["monte_carlo"] for m in checks],
                         [1.96 * m["stderr"] for m in checks], fmt="o", color=line.get_color())
        a = c["along_episode"]
        axes[2].plot(a["t_start"], a["processed_ratio"], color=line.get_color(), label=name)
        axes[2].plot(a["t_start"], a["mean_ratio"], color=line.get_color(), ls=":", lw=0.8)
        axes[2].plot(a["t_start"], a["discount_profile"], color=line.get_color(), ls="--", lw=0.8)
    axes[0].axhline(1.0, color="grey", lw=0.8)
    axes[0].set(xlabel="updates", ylabel="raw ratio mean under the data", title="DualDICE ratio mean")
    axes[1].set(xlabel="updates", ylabel="discounted value",
                title="raw estimate (dotted: processed) vs Monte Carlo (95 %)")
    axes[2].set(xlabel="time step t in episode", ylabel="mean ratio",
                title="ratio along the episode (dotted raw, dashed discount profile)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="hopper-medium,walker2d-medium")
    parser.add_argument("--lrs", default="3e-4,1e-3")
    parser.add_argument("--p", type=float, default=1.5, help="exponent of DualDICE's f(x) = |x|^p / p")
    parser.add_argument("--positive", action="store_true", help="zeta squared (ratios >= 0)")
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
            if any(c["dataset"] == dataset_id and c["lr"] == lr and c.get("p", 1.5) == args.p
                   and c.get("positive", False) == args.positive and c["steps"] == args.steps for c in cells):
                continue
            cells.append(settle(dataset_id, lr, args.p, args.positive, args.steps, args.chunk, args.mc_every,
                                args.mc_episodes, args.seed))
            write_json_atomic(path, cells)
            write_bytes_atomic(args.out / "settling.md", report(cells).encode())
            plot(cells, args.out / "settling.png")
    write_bytes_atomic(args.out / "settling.md", report(cells).encode())
    plot(cells, args.out / "settling.png")
    print(report(cells))


if __name__ == "__main__":
    main()
