import json

import jax
import jax.numpy as jnp
import numpy as np

from drorl.algos import bcq
from drorl.algos.base import Spec
from drorl.data.dataset import Dataset
from drorl.nn.vae import ConditionalVAE
from drorl.train import RunSettings, train

from conftest import make_arrays


def test_soft_clipped_double_q_by_hand():
    q = jnp.array([[[1.0, 5.0, 2.0]], [[3.0, 4.0, 0.0]]])  # [2 critics, 1 state, 3 samples]
    # per sample: 0.75 min + 0.25 max = [1.5, 4.25, 0.5]; max over samples 4.25
    np.testing.assert_allclose(bcq.soft_clipped_double_q(q, 0.75), [4.25])


def _small(config=None):
    spec = Spec(4, 2, -np.ones(2, np.float32), np.ones(2, np.float32), np.zeros(4, np.float32),
                np.ones(4, np.float32))
    config = config or bcq.Config(vae_hidden_dims=(32, 32), hidden_dims=(32, 32))
    return config, bcq.init(config, spec, jax.random.PRNGKey(0))


def test_act_picks_the_candidate_with_the_highest_q1():
    config, state = _small()
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)), jnp.float32)
    key = jax.random.PRNGKey(3)
    chosen = np.asarray(bcq.act(state, obs, key))
    # the candidates rebuilt from the public networks: each state repeated act_samples times, decoded
    # from the VAE with the acting key, perturbed by the actor
    n = config.act_samples
    repeated = jnp.repeat(obs, n, axis=0)
    decoded = ConditionalVAE(config.vae_hidden_dims, 2, 4).apply(state.vae.params, repeated, key=key,
                                                                 method=ConditionalVAE.decode)
    perturbed = bcq.PerturbationActor(config.hidden_dims, 2, config.phi).apply(state.actor.params, repeated, decoded)
    q1 = np.asarray(bcq.CriticEnsemble(config.hidden_dims, 2).apply(state.critic.params, repeated, perturbed)[0])
    q1, perturbed = q1.reshape(5, n), np.asarray(perturbed).reshape(5, n, 2)
    best = perturbed[np.arange(5), np.argmax(q1, axis=1)]
    np.testing.assert_allclose(chosen, best, rtol=1e-6)
    assert np.any(np.argmax(q1, axis=1) != 0)  # the argmax matters: not always the first candidate
    assert np.all(np.abs(chosen) <= 1.0)


def test_act_samples_sets_the_number_of_candidates():
    """act_samples, not the target's num_samples, is how many candidates acting draws: the best of 50
    has a higher Q1 on average over states than a single candidate (swapping the two fields would
    reverse it)."""
    import dataclasses

    config, state = _small()
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(64, 4)), jnp.float32)
    key = jax.random.PRNGKey(5)
    critic = bcq.CriticEnsemble(config.hidden_dims, 2)
    q1_of = lambda st: np.asarray(critic.apply(state.critic.params, state.scaler.observation(obs),  # noqa: E731
                                               bcq.act(st, obs, key))[0])
    one = state.replace(config=dataclasses.replace(config, act_samples=1, num_samples=50))
    many = state.replace(config=dataclasses.replace(config, act_samples=50, num_samples=1))
    assert q1_of(many).mean() > q1_of(one).mean()


def test_perturbation_is_bounded_by_phi():
    config, state = _small()
    actor = bcq.PerturbationActor(config.hidden_dims, 2, config.phi)
    a = jnp.zeros((100, 2))
    out = actor.apply(state.actor.params, jnp.asarray(np.random.default_rng(1).normal(size=(100, 4)) * 10, jnp.float32), a)
    assert float(jnp.max(jnp.abs(out - a))) <= config.phi + 1e-7


def test_bcq_trains_and_its_vae_models_the_behaviour(tmp_path):
    ds = Dataset.from_arrays(make_arrays(n=2000, obs_dim=4, act_dim=2))
    config = bcq.Config(vae_hidden_dims=(64, 64), hidden_dims=(64, 64), batch_size=100)
    states, run = train("bcq", ds, tmp_path / "bcq", RunSettings(steps=1500, seeds=(0,), updates_per_call=500),
                        config=config, progress=False)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["vae_loss"] < 0.5 * lines[0]["vae_loss"]
    assert all(np.isfinite(x["critic_loss"]) for x in lines)
    state = jax.tree_util.tree_map(lambda x: x[0], states)
    obs = state.scaler.observation(jnp.asarray(ds.observations[:500]))
    decoded = ConditionalVAE(config.vae_hidden_dims, 2, 4).apply(
        state.vae.params, obs, key=jax.random.PRNGKey(0), method=ConditionalVAE.decode)
    assert float(jnp.mean((decoded - ds.actions[:500]) ** 2)) < 0.05  # actions are a function of the state
