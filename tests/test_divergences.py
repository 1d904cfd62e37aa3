import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from drorl.robust import DIVERGENCES, get_divergence

jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_inverse_derivative_inverts_the_derivative(name):
    div = get_divergence(name)
    x = jnp.linspace(0.05, 4.0, 50)
    np.testing.assert_allclose(div.f_prime_inverse(div.f_prime(x)), x, rtol=1e-4, atol=1e-4)
    assert abs(float(div.f(jnp.float32(1.0)))) < 1e-6  # f(1) = 0


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_derivative_matches_finite_differences(name):
    div = get_divergence(name)
    x = np.linspace(0.2, 3.0, 15)
    h = 1e-3
    numeric = (np.asarray(div.f(jnp.asarray(x + h, jnp.float32))) -
               np.asarray(div.f(jnp.asarray(x - h, jnp.float32)))) / (2 * h)
    np.testing.assert_allclose(div.f_prime(jnp.asarray(x, jnp.float32)), numeric, atol=2e-3)


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_worst_case_weight_maximises_w_y_minus_f(name):
    """w*(y) = argmax_{w >= 0} w y - f(w), against a bounded numerical maximiser."""
    div = get_divergence(name)
    f = lambda w: float(div.f(jnp.float32(w)))  # noqa: E731
    for y in [-1.5, -0.6, -0.45, -0.3, -0.1, 0.0, 0.1, 0.3, 0.45, 1.0]:
        if name == "softtv" and abs(y) >= 0.5:
            continue  # outside the domain of (f')^{-1}: covered by the capping test
        if name == "kl" and y > 2.0:
            continue
        best = minimize_scalar(lambda w: -(w * y - f(w)), bounds=(0.0, 10.0), method="bounded",
                               options={"xatol": 1e-7})
        w = float(div.worst_case_weight(jnp.float32(y)))
        value = w * y - f(w)
        assert value >= -best.fun - 1e-5, (name, y, w, best.x)
        assert w == pytest.approx(best.x, abs=2e-3), (name, y)


def test_soft_tv_zero_weight_threshold_and_cap():
    div = get_divergence("softtv")
    threshold = -np.tanh(1.0) / 2
    assert float(div.worst_case_weight(jnp.float32(threshold - 1e-3))) == 0.0
    assert float(div.worst_case_weight(jnp.float32(threshold + 1e-2))) > 0.0
    assert float(div.worst_case_weight(jnp.float32(-3.0))) == 0.0  # outside the domain: 0, not NaN
    capped = div.worst_case_weight(jnp.array([0.4999, 0.5, 3.0]))
    assert np.all(np.isfinite(capped)) and np.all(capped <= 10.0) and float(capped[-1]) > 8.0
