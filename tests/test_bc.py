import jax
import jax.numpy as jnp
import numpy as np

from drorl.algos import bc
from drorl.algos.base import Spec
from drorl.data.dataset import Dataset

from conftest import make_arrays


def _spec_and_batch(time_steps):
    rng = np.random.default_rng(0)
    n = len(time_steps)
    spec = Spec(4, 2, -np.ones(2, np.float32), np.ones(2, np.float32), np.zeros(4, np.float32),
                np.ones(4, np.float32))
    batch = {"observations": jnp.asarray(rng.normal(size=(n, 4)), jnp.float32),
             "actions": jnp.asarray(rng.uniform(-0.9, 0.9, (n, 2)), jnp.float32),
             "time_steps": jnp.asarray(time_steps, jnp.float32)}
    return spec, batch


def _updated_params(config, spec, batch):
    state = bc.init(config, spec, jax.random.PRNGKey(0))
    state, metrics = bc.update(state, batch, jax.random.PRNGKey(1))
    return jax.tree_util.tree_leaves(state.policy.params), metrics


def test_time_discount_one_is_plain_bc():
    spec, batch = _spec_and_batch(np.arange(32) * 7)
    plain, plain_metrics = _updated_params(bc.Config(policy=bc.PolicyConfig(hidden_dims=(16,))), spec, batch)
    flat, flat_metrics = _updated_params(bc.Config(policy=bc.PolicyConfig(hidden_dims=(16,)), time_discount=1.0), spec, batch)
    np.testing.assert_allclose(float(flat_metrics["loss"]), float(plain_metrics["loss"]), rtol=1e-6)
    for a, b in zip(plain, flat):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_time_discount_ignores_late_transitions():
    # 0.5^200 underflows to 0: the late half of the batch carries no weight, so the update is plain
    # BC on the early half (and the loss is the weighted mean, by hand)
    steps = np.concatenate([np.zeros(16), np.full(16, 200.0)])
    spec, batch = _spec_and_batch(steps)
    early = {k: v[:16] for k, v in batch.items()}
    weighted, metrics = _updated_params(bc.Config(policy=bc.PolicyConfig(hidden_dims=(16,)), time_discount=0.5), spec, batch)
    plain, early_metrics = _updated_params(bc.Config(policy=bc.PolicyConfig(hidden_dims=(16,))), spec, early)
    np.testing.assert_allclose(float(metrics["loss"]), float(early_metrics["loss"]), rtol=1e-6)
    for a, b in zip(weighted, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # and the loss is sum g^t l / sum g^t for mixed steps
    losses = jnp.asarray([1.0, 2.0, 3.0])
    value = bc.time_discounted_bc_loss(losses, jnp.asarray([0.0, 1.0, 2.0]), 0.5)
    np.testing.assert_allclose(float(value), (1 + 0.5 * 2 + 0.25 * 3) / 1.75, rtol=1e-6)


def test_dataset_time_steps_restart_at_every_episode():
    dataset = Dataset.from_arrays(make_arrays(n=120, episode_len=50),
                                  metadata={"env": "inverted-pendulum", "kind": "synthetic"})
    expected = np.concatenate([np.arange(50), np.arange(50), np.arange(20)])
    np.testing.assert_array_equal(dataset.time_steps, expected)
