"""The probabilistic dynamics ensemble (drorl.nn.dynamics; issue 18, acceptance check 2).

One small ensemble, trained once on a noisy, mildly nonlinear synthetic task, serves every test; held-out
quantities are recomputed here from ``predict``'s per-member Gaussians on fresh transitions of the task.
"""

import dataclasses

import flax.serialization
import jax
import numpy as np
import pytest
from scipy.special import logsumexp

from drorl.data.dataset import Dataset
from drorl.errors import DrorlError
from drorl.nn import dynamics

OBS_DIM, ACT_DIM = 3, 2
# small data and long training: each member overfits in its own way, which the mixture averages out;
# patience = max_epochs (no early stop) so that test 4 compares the same epochs
CONFIG = dynamics.Config(num_members=5, num_elites=3, hidden_dims=(64, 64), weight_decays=(2.5e-5, 5e-5, 1e-4),
                         batch_size=32, max_epochs=60, patience=60)
MEMBER_KEYS = jax.random.split(jax.random.PRNGKey(7), CONFIG.num_members)


def synthetic(n: int, seed: int) -> Dataset:
    """s' = s + tanh(s A + a B) + heteroscedastic noise, r = sin(s_0) + a_0^2 + noise (fixed A, B)."""
    system = np.random.default_rng(0)
    a_matrix, b_matrix = 0.3 * system.normal(size=(OBS_DIM, OBS_DIM)), 0.5 * system.normal(size=(ACT_DIM, OBS_DIM))
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS_DIM))
    act = rng.uniform(-1.0, 1.0, size=(n, ACT_DIM))
    noise = 0.05 + 0.2 * np.abs(np.sin(obs[:, :1]))
    delta = np.tanh(obs @ a_matrix + act @ b_matrix) + noise * rng.normal(size=(n, OBS_DIM))
    rewards = np.sin(obs[:, 0]) + act[:, 0] ** 2 + 0.1 * rng.normal(size=n)
    return Dataset.from_arrays({"observations": obs, "actions": act, "rewards": rewards,
                                "next_observations": obs + delta, "terminals": np.zeros(n, bool),
                                "timeouts": np.zeros(n, bool)})


@pytest.fixture(scope="module")
def trained():
    model, report = dynamics.train(CONFIG, synthetic(1000, seed=1), jax.random.PRNGKey(0), progress=False,
                                   member_keys=MEMBER_KEYS)
    return model, report


@pytest.fixture(scope="module")
def fresh():
    return synthetic(2000, seed=2)


def member_log_likelihoods(model, data: Dataset) -> np.ndarray:
    """[E, N] log-density of each fresh transition (s' - s, r) under each member's Gaussian, raw units."""
    _, _, info = dynamics.predict(model, data.observations, data.actions, jax.random.PRNGKey(0), True)
    target = np.concatenate([data.next_observations - data.observations, data.rewards[:, None]], axis=1)
    mean, std = np.asarray(info["mean"], np.float64), np.asarray(info["std"], np.float64)
    return -0.5 * np.sum(((target - mean) / std) ** 2 + 2 * np.log(std) + np.log(2 * np.pi), axis=-1)


def standardised_mse(model, data: Dataset) -> np.ndarray:
    _, _, info = dynamics.predict(model, data.observations, data.actions, jax.random.PRNGKey(0), True)
    target = np.concatenate([data.next_observations - data.observations, data.rewards[:, None]], axis=1)
    return np.mean(((np.asarray(info["mean"]) - target) / np.asarray(model.target_std)) ** 2, axis=(1, 2))


def test_ensemble_mixture_beats_every_single_member_on_held_out_nll(trained, fresh):
    model, report = trained
    log_likelihood = member_log_likelihoods(model, fresh)
    member_nll = -log_likelihood.mean(axis=1)
    elites = np.asarray(model.elites)
    mixture_nll = -np.mean(logsumexp(log_likelihood[elites], axis=0) - np.log(len(elites)))
    assert mixture_nll < member_nll.min() - 0.05, (mixture_nll, member_nll)
    # the same ordering on the training run's own held-out split
    assert report["mixture_nll"] < min(report["holdout_nll"])
    assert report["holdout_transitions"] == 200 and report["train_transitions"] == 800


def test_elites_are_the_members_of_lowest_held_out_loss(trained, fresh):
    model, report = trained
    k = CONFIG.num_elites
    assert report["selection_metric"] == "mse"
    assert report["elites"] == np.argsort(report["holdout_mse"])[:k].tolist()
    assert np.asarray(model.elites).tolist() == report["elites"]

    bad = int(model.elites[0])  # spoil the best member
    noise = jax.random.normal(jax.random.PRNGKey(3), model.params["layers"][0]["kernel"].shape[1:])
    layers = list(model.params["layers"])
    layers[0] = {**layers[0], "kernel": layers[0]["kernel"].at[bad].add(noise)}
    spoiled = model.replace(params={**model.params, "layers": tuple(layers)})
    metrics = dynamics.evaluate(spoiled, fresh.observations, fresh.actions, fresh.next_observations, fresh.rewards)
    mse = standardised_mse(spoiled, fresh)
    np.testing.assert_allclose(np.asarray(metrics["mse"]), mse, rtol=1e-4)
    target_log_std = np.log(np.asarray(model.target_std, np.float64)).sum()  # standardised -> raw units
    np.testing.assert_allclose(np.asarray(metrics["nll"]) + target_log_std,
                               -member_log_likelihoods(spoiled, fresh).mean(axis=1), rtol=1e-4)
    assert mse[bad] > 2 * np.sort(mse)[k]
    chosen = dynamics.select_elites(spoiled, metrics["mse"])
    assert bad not in np.asarray(chosen.elites).tolist()
    assert np.asarray(chosen.elites).tolist() == np.argsort(mse)[:k].tolist()


def test_saved_ensemble_reloads_to_identical_predictions_and_bad_files_raise(trained, fresh, tmp_path):
    model, _ = trained
    path = dynamics.save(tmp_path / "dynamics.msgpack", model)
    assert [p.name for p in tmp_path.iterdir()] == ["dynamics.msgpack"]  # the temporary file was renamed
    loaded = dynamics.load(path)
    assert loaded.config == model.config
    key = jax.random.PRNGKey(11)
    before = jax.tree_util.tree_leaves(dynamics.predict(model, fresh.observations, fresh.actions, key))
    after = jax.tree_util.tree_leaves(dynamics.predict(loaded, fresh.observations, fresh.actions, key))
    assert all(np.array_equal(np.asarray(b), np.asarray(a)) for b, a in zip(before, after))

    payload = path.read_bytes()
    raw = flax.serialization.msgpack_restore(payload)
    raw["obs_dim"] = OBS_DIM + 1  # a file whose arrays do not match its own header
    bad_files = {"truncated.msgpack": payload[:len(payload) // 2], "cut.msgpack": payload[:-1],
                 "mismatched.msgpack": flax.serialization.msgpack_serialize(raw),
                 "other.msgpack": flax.serialization.msgpack_serialize({"step": 3, "tree": {}})}
    for name, content in bad_files.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DrorlError) as error:
            dynamics.load(tmp_path / name)
        message = str(error.value)
        assert str(tmp_path / name) in message and "\n" not in message, message
    with pytest.raises(DrorlError, match="no such"):
        dynamics.load(tmp_path / "missing.msgpack")


def test_vectorised_training_equals_training_members_one_after_another(trained):
    model, report = trained
    single = dataclasses.replace(CONFIG, num_members=1, num_elites=1)
    for m in (0, CONFIG.num_members - 1):
        alone, alone_report = dynamics.train(single, synthetic(1000, seed=1), jax.random.PRNGKey(0),
                                             progress=False, member_keys=MEMBER_KEYS[m:m + 1])
        for together, by_itself in zip(jax.tree_util.tree_leaves(model.params),
                                       jax.tree_util.tree_leaves(alone.params)):
            np.testing.assert_allclose(np.asarray(together)[m], np.asarray(by_itself)[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(alone_report["holdout_mse"][0], report["holdout_mse"][m], rtol=1e-4)


def test_cached_ensemble_is_trained_once_per_dataset_seed_and_config(tmp_path, monkeypatch):
    """``cached`` trains on the first call and reads the file afterwards (policy restarts and other
    algorithms reuse it); another seed, config or dataset is another file."""
    config = dataclasses.replace(CONFIG, hidden_dims=(8,), weight_decays=(2.5e-5, 1e-4), max_epochs=2)
    data = synthetic(200, seed=1)
    model, report, path = dynamics.cached(config, data, 3, tmp_path, progress=False)
    assert path.exists() and path.with_suffix(".json").exists() and report["seed"] == 3

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of reading the cache")

    monkeypatch.setattr(dynamics, "train", no_training)
    again, again_report, again_path = dynamics.cached(config, data, 3, tmp_path, progress=False)
    assert again_path == path and again_report == report
    key = jax.random.PRNGKey(5)
    before = jax.tree_util.tree_leaves(dynamics.predict(model, data.observations, data.actions, key))
    after = jax.tree_util.tree_leaves(dynamics.predict(again, data.observations, data.actions, key))
    assert all(np.array_equal(np.asarray(b), np.asarray(a)) for b, a in zip(before, after))
    others = {dynamics.cache_path(tmp_path, config, data, 4), dynamics.cache_path(tmp_path, CONFIG, data, 3),
              dynamics.cache_path(tmp_path, config, synthetic(200, seed=2), 3)}
    assert path not in others and len(others) == 3
