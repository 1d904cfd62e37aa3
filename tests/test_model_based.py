"""Model rollouts and the model buffer of the model-based algorithms (drorl.algos.model_based; issue 18).

An untrained ensemble on hopper's shapes stands in for a trained one: its predictions wander, so some
rollouts cross hopper's health limits and terminate, which is what these tests need.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from drorl import algos
from drorl.algos import model_based, mopo, mopo_auto, sac
from drorl.algos.base import Spec, replace_config
from drorl.benchmarks import model_based as suite
from drorl.data import buffer as ring
from drorl.envs.termination import terminated
from drorl.nn import dynamics
from drorl.nn.train_state import TrainState, gradient_step

OBS_DIM, ACT_DIM, HORIZON = 11, 3, 4
DYNAMICS = dynamics.Config(num_members=3, num_elites=2, hidden_dims=(16,), weight_decays=(2.5e-5, 1e-4))


def hopper_model() -> dynamics.Model:
    """Identity standardisation with scales that make hopper's height and angle drift by ~0.1 a step."""
    model = dynamics.init(DYNAMICS, OBS_DIM, ACT_DIM, jax.random.PRNGKey(0))
    return model.replace(target_std=jnp.full(OBS_DIM + 1, 0.1))


def start_states(n: int) -> jnp.ndarray:
    obs = 0.05 * jax.random.normal(jax.random.PRNGKey(1), (n, OBS_DIM))
    return obs.at[:, 0].add(1.25)


def policy(obs, key):
    return jnp.tanh(obs[:, :ACT_DIM] + jax.random.normal(key, (obs.shape[0], ACT_DIM)))


def reference_rollout(model, start_obs, key):
    """Step by step in Python, with numpy's termination rule: the rows of the rollouts still alive."""
    rows, alive, obs = [], np.ones(start_obs.shape[0], bool), start_obs
    for step_key in jax.random.split(key, HORIZON):
        k_policy, k_model = jax.random.split(step_key)
        actions = policy(obs, k_policy)
        next_obs, rewards, _ = dynamics.predict(model, obs, actions, k_model)
        done = terminated("hopper", np.asarray(next_obs))
        for i in np.flatnonzero(alive):
            rows.append((obs[i], actions[i], rewards[i], next_obs[i], float(done[i])))
        alive &= ~done
        obs = next_obs
    return rows


def test_rollouts_match_a_per_step_python_loop_and_stop_at_termination():
    model, starts, key = hopper_model(), start_states(64), jax.random.PRNGKey(2)
    rows, valid = jax.jit(lambda s, k: model_based.rollout(model, "hopper", policy, s, HORIZON, k))(starts, key)
    valid = np.asarray(valid)
    terminals = np.asarray(rows["terminals"]).reshape(HORIZON, -1)
    alive = np.asarray(valid).reshape(HORIZON, -1)
    assert 0 < terminals[alive].sum() and alive[-1].sum() < 64, "no rollout terminated: the test says nothing"
    # a rollout is alive at step t + 1 iff it was at t and did not terminate there
    np.testing.assert_array_equal(alive[1:], alive[:-1] & (terminals[:-1] == 0))
    np.testing.assert_array_equal(terminals.astype(bool), terminated("hopper", np.asarray(
        rows["next_observations"])).reshape(HORIZON, -1))

    reference = reference_rollout(model, starts, key)
    columns = model_based.MODEL_COLUMNS
    got = [tuple(np.asarray(rows[c])[i] for c in columns) for i in np.flatnonzero(valid)]
    assert len(got) == len(reference)
    for mine, theirs in zip(got, reference):  # step-major order in both
        for a, b in zip(mine, theirs):
            np.testing.assert_allclose(a, np.asarray(b), rtol=1e-6, atol=1e-6)
    # each step starts from the previous step's next observations
    obs = np.asarray(rows["observations"]).reshape(HORIZON, 64, OBS_DIM)
    np.testing.assert_array_equal(obs[1:], np.asarray(rows["next_observations"]).reshape(HORIZON, 64, OBS_DIM)[:-1])


def test_masked_insert_writes_only_valid_rows_in_order_and_wraps():
    buffer = ring.empty(5, 1, 1)
    rows = {"observations": jnp.arange(4.0)[:, None], "actions": jnp.zeros((4, 1)), "rewards": jnp.arange(4.0),
            "next_observations": jnp.zeros((4, 1)), "terminals": jnp.zeros(4)}
    buffer = ring.insert(buffer, rows, jnp.array([True, False, True, True]))
    assert int(buffer.size) == 3 and int(buffer.cursor) == 3
    np.testing.assert_array_equal(buffer.columns["rewards"], [0, 2, 3, 0, 0])
    buffer = ring.insert(buffer, {**rows, "rewards": rows["rewards"] + 10}, jnp.array([False, True, True, True]))
    assert int(buffer.size) == 5 and int(buffer.cursor) == 1
    np.testing.assert_array_equal(buffer.columns["rewards"], [13, 2, 3, 11, 12])


def test_batches_mix_real_and_model_rows_with_real_ratio_f():
    config = model_based.ModelConfig(dynamics=DYNAMICS, horizon=HORIZON, rollout_batch_size=40, rollout_every=4,
                                     retain=2, real_ratio=0.25)
    spec = Spec(OBS_DIM, ACT_DIM, -np.ones(ACT_DIM, np.float32), np.ones(ACT_DIM, np.float32),
                np.zeros(OBS_DIM, np.float32), np.ones(OBS_DIM, np.float32), "hopper")
    agent = sac.init(sac.Config(hidden_dims=(8,)), spec, jax.random.PRNGKey(0))
    n = 300
    data = {"observations": start_states(n), "actions": jnp.zeros((n, ACT_DIM)), "rewards": jnp.full(n, 7.0),
            "next_observations": start_states(n), "terminals": jnp.zeros(n), "initial_observations": start_states(2),
            "initial_actions": jnp.zeros((2, ACT_DIM))}
    buffer, batch_size = model_based.empty_buffer(config, spec), 32
    assert buffer.capacity == 40 * HORIZON * 2 and model_based.starts_per_update(config) == 10
    written = 0
    step = jax.jit(lambda buf, key: model_based.model_step(
        config, batch_size, hopper_model(), buf, "hopper", agent,
        model_based.sample(config, batch_size, data, jax.random.fold_in(key, 1)), key))
    for i in range(3):
        before = int(buffer.size)
        buffer, mixed, metrics = step(buffer, jax.random.PRNGKey(i))
        written += float(metrics["rollout_valid"]) * 10 * HORIZON
        assert int(buffer.size) - before == round(float(metrics["rollout_valid"]) * 10 * HORIZON)
        is_real = np.asarray(mixed["is_real"])
        assert is_real.shape == (batch_size,) and is_real.sum() == 8  # round(f B) real rows, first
        np.testing.assert_array_equal(np.asarray(mixed["rewards"])[:8], 7.0)  # the dataset's rewards
        assert not np.any(np.asarray(mixed["rewards"])[8:] == 7.0)  # the model's
    assert int(buffer.size) == round(written)


def test_mopo_penalties_and_the_sign_of_j_lambda():
    """MOPO's max-std penalty; MOPO-auto's excess entropy is never a bonus (trap 1: the differential
    entropy of a small sigma is negative) and minimising J raises lambda while the rollouts' entropy
    exceeds delta (trap 2: the reverse of SAC's temperature)."""
    model = hopper_model().replace(elites=jnp.array([2, 0]))
    std = jax.random.uniform(jax.random.PRNGKey(0), (3, 5, OBS_DIM + 1), minval=0.01, maxval=2.0)
    expected = np.max(np.linalg.norm(np.asarray(std)[[2, 0]], axis=-1), axis=0)
    np.testing.assert_allclose(mopo.max_std_penalty(model, {"std": std}), expected, rtol=1e-6)

    penalty = mopo_auto.entropy_penalty(reference_std=0.25)
    small = {"normalised_std": jnp.full((3, 5, OBS_DIM + 1), 0.01)}
    assert float(mopo_auto.gaussian_entropy(small["normalised_std"]).max()) < 0  # a negative entropy ...
    np.testing.assert_array_equal(penalty(model, small), 0.0)  # ... is no bonus
    large = {"normalised_std": std.at[0].set(1.0)}  # member 0, an elite, at the data's own spread
    h_ref = 0.5 * (OBS_DIM + 1) * (1 + np.log(2 * np.pi * 0.25**2))
    assert np.all(np.asarray(penalty(model, large)) >= 0.5 * (OBS_DIM + 1) * (1 + np.log(2 * np.pi)) - h_ref - 1e-4)

    weight = TrainState.create(jnp.zeros(()), optax.sgd(0.1))
    model_rows = jnp.array([0.0, 1.0, 1.0])
    for mean_penalty, direction in ((2.0, 1), (0.0, -1)):
        rows = jnp.array([100.0, mean_penalty, mean_penalty])  # the real row's value is left out
        stepped, loss, _ = gradient_step(weight, mopo_auto.penalty_weight_objective, rows, model_rows, 0.5)
        assert float(loss) == pytest.approx(0.5 - mean_penalty)
        assert np.sign(float(stepped.params)) == direction


def test_the_benchmark_profiles_are_well_formed(tmp_path):
    """Every profile's jobs (the paper's: nine datasets x five variants, 5 seeds, 1M updates) build valid
    configs of their algorithms, with the profile's model and SAC settings at each algorithm's nesting."""
    paper = suite.PROFILES["paper"]
    jobs = suite.jobs_of(paper, tmp_path)
    assert len(jobs) == 9 * 5 and paper.seeds == (0, 1, 2, 3, 4) and paper.steps == 1_000_000
    assert {(j.task, j.kind) for j in jobs} == {(t, k) for t in ("hopper", "walker2d", "halfcheetah")
                                                for k in ("medium", "medium-replay", "medium-expert")}
    for profile in suite.PROFILES.values():
        for job in suite.jobs_of(profile, tmp_path):
            replace_config(algos.get(job.algorithm, "offline").Config(), job.config_overrides())
    smoke = {j.label: replace_config(algos.get(j.algorithm, "offline").Config(), j.config_overrides())
             for j in suite.jobs_of(suite.PROFILES["smoke"], tmp_path)}
    assert smoke["DROMO-strict"].variance == "strict" and smoke["DROMO-strict"].combo.sac.batch_size == 32
    assert smoke["MOPO-auto"].mopo.model.rollout_batch_size == 100 and smoke["COMBO"].model.dynamics.max_epochs == 3
