"""Where a trained BE-DROIL run puts its worst-case weights, by time step within the demonstrations.

    python -m tools.be_droil_weights RUN_DIR [RUN_DIR ...]

For each run (its first seed's latest checkpoint) it recomputes w* on every demonstration transition
and prints, per band of time steps, the mean weight, the mean imitation loss, and the weights the
balance equation alone admits when every state is distinct (be_droil.Config.initial_states):
T (1 - g) g^t from the first states, 1 - g^(t+1) from all states. Also the correlations of w* with
that profile, with the loss and with the residual e. A markdown table, for docs/results.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from drorl.algos import be_droil
from drorl.data.registry import resolve
from drorl.data.sampling import every_row
from drorl.train import device_data, load_states

BANDS = ((0, 10), (10, 50), (50, 100), (100, 200), (200, 400), (400, 700), (700, 1000))


def balance_profile(steps: np.ndarray, episodes: int, gamma: float, initial_states: str) -> np.ndarray:
    """The only w the balance equation admits when every dataset state is distinct."""
    if initial_states == "all":
        return 1.0 - gamma ** (steps + 1)
    return steps.shape[0] / episodes * (1.0 - gamma) * gamma**steps


def weights_by_time(run_dir: Path) -> str:
    _, record, states = load_states(run_dir)
    if record["algorithm"] != "be-droil":
        raise SystemExit(f"{run_dir}: a {record['algorithm']} run, expected be-droil")
    dataset, _, _ = resolve(record["dataset"]["id"], progress=False)
    state = jax.tree_util.tree_map(lambda x: x[0], states)
    config = state.config
    losses, residual, weights = (np.asarray(x) for x in be_droil.current_weights(state, every_row(device_data(dataset))))
    tau = be_droil.tau_of(state.dual.params["tau_raw"])
    steps = dataset.time_steps
    profile = balance_profile(steps, dataset.num_episodes, config.gamma, config.initial_states)
    lines = [f"### {run_dir} (seed {record['seeds'][0]}, initial_states={config.initial_states}, rho={config.rho}, "
             f"tau={float(tau):.3g})", "",
             "| time steps | mean w* | balance-only w | mean imitation loss |", "|---|---|---|---|"]
    for low, high in BANDS:
        band = (steps >= low) & (steps < high)
        if band.any():
            lines.append(f"| [{low}, {high}) | {weights[band].mean():.3f} | {profile[band].mean():.3f} | "
                         f"{losses[band].mean():.4f} |")
    corr = lambda a, b: float(np.corrcoef(a, b)[0, 1])  # noqa: E731
    lines += ["", f"corr(w*, balance-only w) = {corr(weights, profile):.2f}; corr(w*, loss) = "
                  f"{corr(weights, losses):.2f}; corr(w*, e) = {corr(weights, residual):.2f}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    for run in parser.parse_args().runs:
        print(weights_by_time(run))


if __name__ == "__main__":
    main()
