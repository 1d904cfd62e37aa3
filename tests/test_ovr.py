import jax
import jax.numpy as jnp
import numpy as np

from drorl.algos import bcq, ovr
from drorl.algos.base import Spec


def _setup(**overrides):
    spec = Spec(4, 2, -np.ones(2, np.float32), np.ones(2, np.float32), np.zeros(4, np.float32),
                np.ones(4, np.float32))
    config = ovr.Config(vae_hidden_dims=(16, 16), hidden_dims=(16, 16), dice_hidden_dims=(8,), **overrides)
    rng = np.random.default_rng(0)
    batch = {"observations": rng.normal(size=(32, 4)), "actions": rng.uniform(-1, 1, (32, 2)),
             "rewards": rng.normal(size=32), "next_observations": rng.normal(size=(32, 4)),
             "terminals": (rng.uniform(size=32) < 0.1).astype(float), "initial_observations": rng.normal(size=(32, 4))}
    batch = {k: jnp.asarray(v, jnp.float32) for k, v in batch.items()}
    return config, ovr.init(config, spec, jax.random.PRNGKey(0)), batch


def test_lambda_zero_is_exactly_bcq():
    config, state, batch = _setup(variance_lambda=0.0)
    key = jax.random.PRNGKey(7)
    new, _ = ovr.update(state, batch, key)
    plain, _ = bcq.update(state.base, {**batch, "augmented_rewards": batch["rewards"]}, ovr.base_update_key(key))
    for x, y in zip(jax.tree_util.tree_leaves(new.base), jax.tree_util.tree_leaves(plain)):
        np.testing.assert_array_equal(x, y)


def test_augmented_reward_by_hand_with_unit_ratio():
    r = jnp.array([1.0, -2.0, 0.5])
    lam = 0.3
    # w = 1: nu = r, r~ = r - lam r^2 - lam r^2 = r - 2 lam r^2
    np.testing.assert_allclose(ovr.augmented_reward(r, jnp.ones(3), lam), [1 - 0.6, -2 - 2.4, 0.5 - 0.15], rtol=1e-6)
    np.testing.assert_allclose(ovr.augmented_reward(r, jnp.full(3, 2.0), lam),
                               r - lam * 2.0 * r * r - lam * r * r, rtol=1e-6)
    # reward_scale c: the penalty is lam c ((r / c)^2 w + (r / c)^2) = (lam / c) (w r^2 + r^2)
    np.testing.assert_allclose(ovr.augmented_reward(r, jnp.ones(3), lam, reward_scale=4.0),
                               r - 2 * (lam / 4.0) * r * r, rtol=1e-6)


def test_ratios_are_clipped_and_self_normalised():
    w = ovr.processed_ratios(jnp.array([-1.0, 0.5, 1.5, 50.0]), 10.0, True)
    np.testing.assert_allclose(w, np.array([0.0, 0.5, 1.5, 10.0]) / 3.0, rtol=1e-6)


def test_importance_weighting_ablation_runs_and_weights_the_critic():
    config, state, batch = _setup(importance_weighting=True)
    new, metrics = ovr.update(state, batch, jax.random.PRNGKey(1))
    assert np.isfinite(float(metrics["critic_loss"]))
    assert float(metrics["augmented_reward_mean"]) == float(jnp.mean(batch["rewards"]))
