"""How a run's policies fail: episode length and reward terms, nominal and under chosen perturbations.

    python -m tools.episode_terms RUN_DIR --perturb damping=1.4 gravity=0.15 [--episodes 2]

Rolls every seed's policy (latest checkpoint, deterministic actions) for ``--episodes`` episodes per
condition in Gymnasium envs (the evaluation's reset seeds) and prints, per condition, the mean
episode length (and the shortest), the mean return and its forward-velocity and control-cost terms.
A markdown table, for docs/results: it tells a policy that survives longer under a perturbation
from one that merely moves faster.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from drorl.envs import make_env
from drorl.envs.perturbations import Perturbation
from drorl.evaluate import episode_seeds
from drorl.train import load_states, policy_fn


def parse_condition(text: str) -> Perturbation:
    family, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--perturb {text!r}: expected FAMILY=VALUE, e.g. damping=1.4")
    return Perturbation(family, float(value))


def episode_terms(run_dir: Path, conditions: list[Perturbation | None], episodes: int) -> str:
    algo, record, states = load_states(run_dir)
    act, seeds, task = policy_fn(algo, states), len(record["seeds"]), record["env"]
    rows = ["| condition | length | shortest | return | forward term | control term |", "|---|---|---|---|---|---|"]
    for condition in conditions:
        envs = [make_env(task, condition) for _ in range(seeds)]
        totals = {k: [] for k in ("length", "return", "forward", "ctrl")}
        for reset_seed in episode_seeds(0, episodes):  # the evaluation's reset seeds
            obs = np.stack([env.reset(seed=reset_seed)[0] for env in envs]).astype(np.float32)
            done, sums = np.zeros(seeds, bool), {k: np.zeros(seeds) for k in totals}
            while not done.all():
                actions = act(obs[:, None, :])[:, 0]  # [S, 1, obs] -> one action per seed
                for i in np.flatnonzero(~done):
                    obs[i], reward, terminated, truncated, info = envs[i].step(actions[i])
                    terms = {"length": 1.0, "return": reward, "forward": info.get("reward_forward", 0.0),
                             "ctrl": info.get("reward_ctrl", 0.0)}
                    for key, value in terms.items():
                        sums[key][i] += value
                    done[i] = terminated or truncated
            for key in totals:
                totals[key].extend(sums[key])
        for env in envs:
            env.close()
        name = "nominal" if condition is None else f"{condition.family} {condition.value:g}"
        mean = {key: np.mean(values) for key, values in totals.items()}
        rows.append(f"| {name} | {mean['length']:.0f} | {np.min(totals['length']):.0f} | {mean['return']:.0f} | "
                    f"{mean['forward']:.0f} | {mean['ctrl']:.0f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--perturb", nargs="*", default=[], type=parse_condition, help="FAMILY=VALUE conditions")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per seed and condition")
    args = parser.parse_args()
    for run_dir in args.run_dirs:
        print(f"### {run_dir} ({args.episodes} episodes per seed and condition)\n")
        print(episode_terms(run_dir, [None, *args.perturb], args.episodes) + "\n")


if __name__ == "__main__":
    main()
