import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from drorl.algos import bc, drbc
from drorl.algos.base import Spec


@pytest.mark.parametrize("rho", [0.05, 0.2, 0.5, 0.8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_eta_minimises_the_dual(rho, seed):
    losses = jnp.asarray(np.random.default_rng(seed).exponential(size=257), jnp.float32)
    eta = drbc.tv_dual_argmin(losses, rho)
    g = lambda e: float(drbc.tv_dual_objective(losses, jnp.float32(e), rho))  # noqa: E731
    grid = np.linspace(0.0, float(losses.max()) + 1, 20001)
    on_grid = jax.vmap(lambda e: drbc.tv_dual_objective(losses, e, rho))(jnp.asarray(grid, jnp.float32))
    brute = grid[int(np.argmin(np.asarray(on_grid)))]
    assert g(float(eta)) <= g(brute) + 1e-5
    refined = minimize_scalar(g, bounds=(0, float(losses.max())), method="bounded")
    assert g(float(eta)) <= refined.fun + 1e-5


def test_original_variant_uses_the_dual_value_and_fewer_samples():
    rng = np.random.default_rng(0)
    spec = Spec(4, 2, -np.ones(2, np.float32), np.ones(2, np.float32), np.zeros(4, np.float32),
                np.ones(4, np.float32))
    batch = {"observations": jnp.asarray(rng.normal(size=(64, 4)), jnp.float32),
             "actions": jnp.asarray(rng.uniform(-1, 1, (64, 2)), jnp.float32)}
    metrics = {}
    for variant in ("argmin", "original"):
        config = drbc.Config(policy=bc.PolicyConfig(hidden_dims=(16,)), rho=0.3, eta=variant)
        state = drbc.init(config, spec, jax.random.PRNGKey(0))
        _, metrics[variant] = drbc.update(state, batch, jax.random.PRNGKey(0))
    # with eta the 0.3-quantile, 70 % of the samples lie above it; the dual value is higher: fewer do
    assert float(metrics["argmin"]["active_fraction"]) == pytest.approx(0.7, abs=0.02)
    assert float(metrics["original"]["eta"]) > float(metrics["argmin"]["eta"])
    assert float(metrics["original"]["active_fraction"]) < float(metrics["argmin"]["active_fraction"])
