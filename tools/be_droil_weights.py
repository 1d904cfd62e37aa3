"""Where a trained BE-DROIL run puts its worst-case weights, by time step within the demonstrations.

    python -m tools.be_droil_weights RUN_DIR [RUN_DIR ...]

For each run (its first seed's latest checkpoint) it recomputes w* on every demonstration transition
and prints, per band of time steps, the mean weight, the mean imitation loss, the band's mass under the
expert's discounted occupancy d_D, and the weights the balance equation alone admits when every state
is distinct: under ``occupancy="uniform"`` T (1 - g) g^t from the first states, 1 - g^(t+1) from all
states (be_droil.Config.initial_states); under ``occupancy="discounted"`` w = 1. Then the correlations
of w* with g^t, the loss and the residual e, over the rows as stored and under d_D (rows weighted by
their d_D probability: what the training batches see). A markdown table, for docs/results.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from drorl.algos import be_droil
from drorl.data.registry import resolve
from drorl.data.sampling import discounted_occupancy, every_row
from drorl.train import device_data, load_states

BANDS = ((0, 10), (10, 50), (50, 100), (100, 200), (200, 400), (400, 700), (700, 1000))


def balance_profile(steps: np.ndarray, episodes: int, gamma: float, initial_states: str, occupancy: str
                    ) -> np.ndarray:
    """The only w the balance equation admits when every dataset state is distinct."""
    if occupancy == "discounted":
        return np.ones_like(steps, dtype=np.float64)
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
    batch = every_row(device_data(dataset))
    losses, residual, weights = (np.asarray(x) for x in be_droil.current_weights(state, batch))
    tau = be_droil.tau_of(state.dual.params["tau_raw"])
    steps = dataset.time_steps
    profile = balance_profile(steps, dataset.num_episodes, config.gamma, config.initial_states, config.occupancy)
    discount = config.gamma**steps
    d_mass = discounted_occupancy(dataset, config.gamma)
    lines = [f"### {run_dir} (seed {record['seeds'][0]}, occupancy={config.occupancy}, "
             f"initial_states={config.initial_states}, rho={config.rho}, tau={float(tau):.3g})", "",
             "| time steps | mean w* | balance-only w | mean imitation loss | d_D mass |", "|---|---|---|---|---|"]
    for low, high in BANDS:
        band = (steps >= low) & (steps < high)
        if band.any():
            lines.append(f"| [{low}, {high}) | {weights[band].mean():.3f} | {profile[band].mean():.3f} | "
                         f"{losses[band].mean():.4f} | {d_mass[band].sum():.3f} |")
    rows, under_d = (lambda a, b: _correlation(a, b, None)), (lambda a, b: _correlation(a, b, d_mass))
    lines += ["", f"rows as stored: corr(w*, g^t) = {rows(weights, discount):.2f}, corr(w*, loss) = "
                  f"{rows(weights, losses):.2f}, corr(w*, e) = {rows(weights, residual):.2f}; under d_D: "
                  f"corr(w*, g^t) = {under_d(weights, discount):.2f}, corr(w*, loss) = "
                  f"{under_d(weights, losses):.2f}, E_D[w*] = {float(d_mass @ weights):.3f}, d_D mass with w* > 1: "
                  f"{float(d_mass[weights > 1].sum()):.3f}", ""]
    return "\n".join(lines)


def _correlation(x: np.ndarray, y: np.ndarray, probabilities: np.ndarray | None) -> float:
    """Pearson correlation of x and y, under the row probabilities given (uniform when None)."""
    p = np.full(x.shape, 1.0 / x.size) if probabilities is None else probabilities / probabilities.sum()
    xc, yc = x - p @ x, y - p @ y
    return float(p @ (xc * yc) / np.sqrt((p @ xc**2) * (p @ yc**2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    for run in parser.parse_args().runs:
        print(weights_by_time(run))


if __name__ == "__main__":
    main()
