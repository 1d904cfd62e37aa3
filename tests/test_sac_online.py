import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drorl.algos import sac
from drorl.algos.base import Spec
from drorl.nn.policies import tanh_gaussian_log_prob, tanh_gaussian_sample_and_log_prob
from drorl.online import OnlineSettings, train_online


def test_sample_log_prob_matches_density_at_the_sample():
    key = jax.random.PRNGKey(0)
    mean = jax.random.normal(key, (64, 3))
    log_std = jnp.full((64, 3), -0.7)
    action, log_prob = tanh_gaussian_sample_and_log_prob(mean, log_std, jax.random.PRNGKey(1))
    np.testing.assert_allclose(log_prob, tanh_gaussian_log_prob(mean, log_std, action), rtol=1e-4, atol=1e-4)


def test_tanh_gaussian_density_integrates_to_one():
    """1-D: the density of a = tanh(u), u ~ N(0.3, 0.5^2), integrates to 1 over (-1, 1)."""
    a = jnp.linspace(-1 + 1e-6, 1 - 1e-6, 200_001)[:, None]
    density = jnp.exp(tanh_gaussian_log_prob(jnp.full_like(a, 0.3), jnp.full_like(a, jnp.log(0.5)), a))
    assert float(jnp.trapezoid(density, a[:, 0])) == pytest.approx(1.0, abs=1e-3)


def _spec(obs_dim=3, act_dim=2):
    return Spec(obs_dim, act_dim, -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32),
                np.zeros(obs_dim, np.float32), np.ones(obs_dim, np.float32))


def test_critic_regresses_to_the_soft_bellman_target():
    """With gamma = 0 the target is r: repeated updates on one batch drive Q(s, a) to r."""
    config = sac.Config(hidden_dims=(32, 32), gamma=0.0, critic_lr=3e-3)
    state = sac.init(config, _spec(), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {"observations": rng.normal(size=(16, 3)), "actions": rng.uniform(-1, 1, (16, 2)),
             "rewards": rng.normal(size=16), "next_observations": rng.normal(size=(16, 3)),
             "terminals": np.zeros(16)}
    batch = {k: jnp.asarray(v, jnp.float32) for k, v in batch.items()}
    step = jax.jit(sac.update)
    for i in range(400):
        state, metrics = step(state, batch, jax.random.PRNGKey(i))
    q = sac.CriticEnsemble((32, 32)).apply(state.critic.params, batch["observations"], batch["actions"])
    np.testing.assert_allclose(q, np.broadcast_to(batch["rewards"], q.shape), atol=0.05)
    assert metrics["temperature"] < config.init_temperature  # entropy above target: alpha falls


def test_target_critic_is_polyak_average():
    config = sac.Config(hidden_dims=(8,), tau=0.1)
    state = sac.init(config, _spec(), jax.random.PRNGKey(0))
    batch = {"observations": jnp.ones((4, 3)), "actions": jnp.zeros((4, 2)), "rewards": jnp.ones(4),
             "next_observations": jnp.ones((4, 3)), "terminals": jnp.zeros(4)}
    new, _ = sac.update(state, batch, jax.random.PRNGKey(1))
    expected = jax.tree_util.tree_map(lambda c, t: 0.1 * c + 0.9 * t, new.critic.params, state.target_critic)
    for x, y in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(new.target_critic)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_online_run_checkpoints_snapshots_and_resumes(tmp_path):
    settings = OnlineSettings(env_steps=400, start_steps=100, update_every=50, buffer_size=1000,
                              eval_every=200, eval_episodes=1, checkpoint_every=200)
    config = sac.Config(hidden_dims=(16, 16), batch_size=32)
    train_online("sac", "inverted-pendulum", tmp_path / "a", settings, config=config, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(50, 401, 50))
    assert "critic_loss" not in lines[0] and "critic_loss" in lines[-1]  # no updates during random warm-up
    assert sum("eval/return" in x for x in lines) == 2
    # the episode record: the pendulum (v5) pays 1 per step except the one that ends the episode (every
    # episode here ends by falling, long before the time limit), and it has no cost signal
    finished = [x for x in lines if "episodes" in x]
    assert finished and all(x["episode_return"] == x["episode_length"] - 1 for x in finished)
    assert all(x["episode_cost"] == x["episode_violations"] == 0 for x in finished)
    assert sorted(p.name for p in (tmp_path / "a" / "snapshots").iterdir()) == [
        "step_000000200.msgpack", "step_000000400.msgpack"]
    # extend the run: it resumes from step 400 with the buffer it had
    state, _ = train_online("sac", "inverted-pendulum", tmp_path / "a",
                            OnlineSettings(**{**settings.__dict__, "env_steps": 500}), config=config,
                            progress=False)
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines][-2:] == [450, 500]
    assert int(state.step) == len(range(100, 501, 50)) * 50  # 50 updates per call from step 100 on
