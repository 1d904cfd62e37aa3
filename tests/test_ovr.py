import jax
import jax.numpy as jnp
import numpy as np

from drorl.algos import bcq, dualdice, ovr
from drorl.algos.base import Spec


def _setup(**overrides):
    spec = Spec(4, 2, -np.ones(2, np.float32), np.ones(2, np.float32), np.zeros(4, np.float32),
                np.ones(4, np.float32))
    config = ovr.Config(base=bcq.Config(vae_hidden_dims=(16, 16), hidden_dims=(16, 16)),
                        ratio=ovr.RatioConfig(hidden_dims=(8,)), **overrides)
    rng = np.random.default_rng(0)
    batch = {"observations": rng.normal(size=(32, 4)), "actions": rng.uniform(-1, 1, (32, 2)),
             "rewards": rng.normal(size=32), "next_observations": rng.normal(size=(32, 4)),
             "terminals": (rng.uniform(size=32) < 0.1).astype(float), "initial_observations": rng.normal(size=(32, 4))}
    batch = {k: jnp.asarray(v, jnp.float32) for k, v in batch.items()}
    return config, ovr.init(config, spec, jax.random.PRNGKey(0)), batch


def test_lambda_zero_is_exactly_bcq():
    config, state, batch = _setup(variance_lambda=0.0)
    key = jax.random.PRNGKey(7)
    # compiled, as training runs them (eager dispatch of the small ops costs more than the compilation)
    new, _ = jax.jit(ovr.update)(state, batch, key)
    plain, _ = jax.jit(lambda s, b, k: bcq.update(s, b, k, rewards=b["rewards"]))(state.base, batch,
                                                                                 ovr.base_update_key(key))
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


def test_importance_weighting_ablation_weights_the_critic_by_the_ratios():
    """The I.W. ablation's BCQ step equals BCQ's with the critic loss weighted by the processed DualDICE
    ratios (computed after the ratio step) and the plain rewards; without the weights it differs."""
    config, state, batch = _setup(importance_weighting=True)
    # a ratio network away from its initialisation (whose ratios clip to 0 everywhere)
    leaves, treedef = jax.tree_util.tree_flatten(state.dice.zeta.params)
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    moved = [x + 0.5 + 0.5 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    state = state.replace(dice=state.dice.replace(zeta=state.dice.zeta.replace(
        params=jax.tree_util.tree_unflatten(treedef, moved))))
    key = jax.random.PRNGKey(1)
    new, metrics = ovr.update(state, batch, key)
    k_dice, k_base = jax.random.split(key)
    dice, _ = dualdice.update_for_policy(state.dice, batch, k_dice, lambda obs, k: bcq.act(state.base, obs, k))
    ratios = ovr.processed_ratios(dualdice.ratio(dice, batch["observations"], batch["actions"]),
                                  config.ratio.max_ratio, config.ratio.self_normalise)
    assert float(jnp.std(ratios)) > 1e-3  # the weights are not all equal, so they can matter
    weighted, _ = bcq.update(state.base, batch, k_base, critic_weights=ratios)
    unweighted, _ = bcq.update(state.base, batch, k_base)
    for x, y in zip(jax.tree_util.tree_leaves(new.base.critic), jax.tree_util.tree_leaves(weighted.critic)):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(new.base.critic),
                                                           jax.tree_util.tree_leaves(unweighted.critic)))
    assert float(metrics["augmented_reward_mean"]) == float(jnp.mean(batch["rewards"]))
