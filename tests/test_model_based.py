"""Model rollouts and the model buffer of the model-based algorithms (drorl.algos.model_based; issue 18).

An untrained ensemble on hopper's shapes stands in for a trained one: its predictions wander, so some
rollouts cross hopper's health limits and terminate, which is what these tests need.
"""

import dataclasses
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


def test_each_model_row_comes_from_its_own_random_elite():
    """dynamics.predict (what the rollouts step with): every row from one of the elites, drawn per row,
    never from a non-elite; its next state and reward are that member's prediction."""
    model, key = hopper_model().replace(elites=jnp.array([2, 0])), jax.random.PRNGKey(3)
    obs = start_states(256)
    actions = policy(obs, jax.random.PRNGKey(4))
    next_obs, rewards, info = dynamics.predict(model, obs, actions, key, deterministic=True)
    member, rows, mean = np.asarray(info["member"]), np.arange(256), np.asarray(info["mean"])
    assert set(member.tolist()) == {0, 2}  # both elites, row by row, and never member 1
    np.testing.assert_allclose(next_obs, np.asarray(obs) + mean[member, rows, :-1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rewards, mean[member, rows, -1], rtol=1e-5, atol=1e-5)
    sampled, _, sampled_info = dynamics.predict(model, obs, actions, key)
    np.testing.assert_array_equal(sampled_info["member"], member)
    z = (np.asarray(sampled) - next_obs) / np.asarray(info["std"])[member, rows, :-1]
    assert 0.8 < z.std() < 1.2  # the chosen member's own noise

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
        model_based.real_and_starts(config, batch_size, data, jax.random.fold_in(key, 1)), key))
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
    std = std.at[1].set(3.0)  # member 1, not an elite, is the most uncertain: MOPO's max still sees it
    expected = np.max(np.linalg.norm(np.asarray(std), axis=-1), axis=0)
    np.testing.assert_allclose(mopo.max_std_penalty(model, {"std": std}), expected, rtol=1e-6)
    assert np.all(expected > np.max(np.linalg.norm(np.asarray(std)[[2, 0]], axis=-1), axis=0))

    penalty = mopo_auto.entropy_penalty(reference_std=0.25)
    small = {"normalised_std": jnp.full((3, 5, OBS_DIM + 1), 0.01)}
    assert float(mopo_auto.gaussian_entropy(small["normalised_std"]).max()) < 0  # a negative entropy ...
    np.testing.assert_array_equal(penalty(model, small), 0.0)  # ... is no bonus
    large = {"normalised_std": std.at[0].set(1.0)}  # member 0, an elite, at the data's own spread
    h_ref = 0.5 * (OBS_DIM + 1) * (1 + np.log(2 * np.pi * 0.25**2))
    every_member = np.maximum(np.max(np.asarray(mopo_auto.gaussian_entropy(std)), axis=0) - h_ref, 0.0)
    np.testing.assert_allclose(penalty(model, {"normalised_std": std}), every_member, rtol=1e-5)
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
    assert {(j.task, j.setting.kind) for j in jobs} == {(t, k) for t in ("hopper", "walker2d", "halfcheetah")
                                                        for k in ("medium", "medium-replay", "medium-expert")}
    for profile in suite.PROFILES.values():
        for job in suite.jobs_of(profile, tmp_path):
            replace_config(algos.get(job.algorithm, "offline").Config(), job.overrides)
    smoke = {j.label: replace_config(algos.get(j.algorithm, "offline").Config(), j.overrides)
             for j in suite.jobs_of(suite.PROFILES["smoke"], tmp_path)}
    assert smoke["DROMO-strict"].variance == "strict" and smoke["DROMO-strict"].combo.sac.batch_size == 32
    assert smoke["MOPO-auto"].mopo.model.rollout_batch_size == 100 and smoke["COMBO"].model.dynamics.max_epochs == 3


def test_the_public_per_dataset_settings_reach_each_algorithms_nesting(tmp_path):
    """COMBO's beta and horizon and MOPO's horizon and lambda follow the published per-dataset tables at each
    algorithm's nesting (MOPO-auto: the horizon only); a profile's own overrides win over them, and a profile
    may turn them off."""
    def configs(profile):
        return {(j.task, j.setting.kind, j.label): replace_config(algos.get(j.algorithm, "offline").Config(),
                                                                 j.overrides)
                for j in suite.jobs_of(profile, tmp_path)}

    paper = configs(suite.PROFILES["paper"])
    assert paper["walker2d", "medium-replay", "MOPO"].model.horizon == 1
    assert paper["walker2d", "medium-replay", "MOPO"].penalty_weight == 1.0
    assert paper["hopper", "medium", "MOPO"].penalty_weight == 5.0
    assert paper["hopper", "medium", "MOPO-auto"].mopo.penalty_weight == mopo.Config().penalty_weight  # own units
    assert paper["halfcheetah", "medium-expert", "MOPO-auto"].mopo.model.horizon == 5
    assert paper["halfcheetah", "medium", "DROMO"].combo.beta == 0.5 and paper["hopper", "medium", "COMBO"].beta == 5.0
    assert paper["walker2d", "medium", "DROMO-strict"].combo.model.horizon == 1
    assert paper["walker2d", "medium", "DROMO-strict"].variance == "strict"
    assert paper["hopper", "medium-replay", "COMBO"].beta == 0.5
    assert paper["hopper", "medium", "COMBO"].model.horizon == 5
    pinned = dataclasses.replace(suite.PROFILES["paper"], model={"horizon": 3}, combo={"beta": 2.0})
    assert configs(pinned)["walker2d", "medium", "COMBO"].model.horizon == 3
    assert configs(pinned)["halfcheetah", "medium", "DROMO"].combo.beta == 2.0
    off = configs(dataclasses.replace(suite.PROFILES["paper"], public_settings=False))
    assert off["walker2d", "medium-replay", "MOPO"] == mopo.Config()


def _critic_batch(n_real: int = 4, n_model: int = 4) -> dict:
    """A mixed batch (real rows first, as model_based.model_step builds it) with distinct rows."""
    keys = jax.random.split(jax.random.PRNGKey(5), 4)
    n = n_real + n_model
    return {"observations": jax.random.normal(keys[0], (n, OBS_DIM)),
            "actions": jax.random.uniform(keys[1], (n, ACT_DIM), minval=-0.9, maxval=0.9),
            "rewards": jax.random.normal(keys[2], (n,)), "next_observations": jax.random.normal(keys[3], (n, OBS_DIM)),
            "terminals": jnp.zeros(n), "is_real": jnp.concatenate([jnp.ones(n_real), jnp.zeros(n_model)])}


def _unit_spec() -> Spec:
    return Spec(OBS_DIM, ACT_DIM, -np.ones(ACT_DIM, np.float32), np.ones(ACT_DIM, np.float32),
                np.zeros(OBS_DIM, np.float32), np.ones(OBS_DIM, np.float32), "hopper")


def test_combo_push_down_is_the_importance_corrected_logsumexp():
    """log sum_k exp(Q(s, a_k) - log p(a_k)) over N uniform actions (log p = |A| log 0.5), N of pi at s
    (log pi(a|s)) and N of pi at s' (log pi(a'|s'), scored with Q(s, .)), against a brute-force sum."""
    from drorl.algos import combo
    from drorl.nn.policies import tanh_gaussian_log_prob

    n, batch = 4, _critic_batch()
    agent = sac.init(sac.Config(hidden_dims=(8,)), _unit_spec(), jax.random.PRNGKey(0))
    config = combo.Config(sac=agent.config, num_sampled_actions=n)
    obs, next_obs, key = batch["observations"], batch["next_observations"], jax.random.PRNGKey(3)
    actions, log_density = combo._sampled_actions(agent, obs, next_obs, n, key)
    actor_net, critic_net = sac.networks(agent.config, ACT_DIM)
    assert actions.shape == (8, 3 * n, ACT_DIM) and float(jnp.abs(actions).max()) <= 1.0
    np.testing.assert_allclose(log_density[:, :n], ACT_DIM * np.log(0.5), rtol=1e-6)
    for part, states in ((slice(n, 2 * n), obs), (slice(2 * n, 3 * n), next_obs)):
        mean, log_std = actor_net.apply(agent.actor.params, states)
        expected = tanh_gaussian_log_prob(mean[:, None], log_std[:, None], actions[:, part])
        np.testing.assert_allclose(log_density[:, part], expected, rtol=1e-3, atol=1e-3)
    q = jnp.stack([critic_net.apply(agent.critic.params, obs, actions[:, k]) for k in range(3 * n)], axis=-1)
    expected = jax.scipy.special.logsumexp(q - log_density[None], axis=-1)
    got = combo.push_down_values(config, agent, agent.critic.params, obs, next_obs, key)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("push_down_states", ["mix", "model"])
def test_combo_critic_pushes_down_at_the_push_down_states_and_up_on_the_dataset_pairs(push_down_states):
    """Eq. 8's beta (E_rho[Q] - E_D[Q]): the push-up term reads only the real rows' pairs, the push-down
    term the states of the whole batch ("mix") or of its model rows only ("model"), and one critic step
    with a dominant beta lowers the gap (a sign flip of the conservative term raises it)."""
    from drorl.algos import combo

    agent = sac.init(sac.Config(hidden_dims=(8,), critic_lr=1e-4), _unit_spec(), jax.random.PRNGKey(0))
    config = combo.Config(sac=agent.config, beta=1e4, num_sampled_actions=4, push_down_states=push_down_states)
    step = jax.jit(lambda a, b, k: combo.critic_step(config, a, b, k))
    batch, key = _critic_batch(), jax.random.PRNGKey(4)
    agent_1, metrics = step(agent, batch, key)
    gap = float(metrics["conservative_gap"])

    def gap_with(column, rows, value):
        changed = {**batch, column: batch[column].at[rows].set(value)}
        return float(step(agent, changed, key)[1]["conservative_gap"])

    real, model = slice(0, 4), slice(4, 8)
    assert gap_with("actions", model, 0.5) == pytest.approx(gap, abs=1e-6)  # model pairs are not pushed up
    assert gap_with("actions", real, 0.5) != pytest.approx(gap, abs=1e-4)  # dataset pairs are
    assert gap_with("next_observations", model, 3.0) != pytest.approx(gap, abs=1e-4)  # pi at s' of model rows
    real_next = gap_with("next_observations", real, 3.0)  # pi at s' of real rows: only with "mix"
    if push_down_states == "mix":
        assert real_next != pytest.approx(gap, abs=1e-4)
    else:
        assert real_next == pytest.approx(gap, abs=1e-6)
    # the same key draws the same actions (the actor did not move): the step lowered the gap
    assert float(step(agent_1, batch, key)[1]["conservative_gap"]) < gap


def test_dromo_penalty_enters_the_critic_loss_with_a_positive_sign():
    """DROMO's critic loss is COMBO's plus alpha E_s sqrt(Var_{pi_f} Q / (|D| d(s)) + eps) > 0."""
    from drorl.algos import bc, combo, dromo

    combo_config = combo.Config(sac=sac.Config(hidden_dims=(8,)), num_sampled_actions=2)
    config = dromo.Config(combo=combo_config, behaviour=bc.PolicyConfig(distribution="gaussian", hidden_dims=(8,)),
                          density="uniform", num_variance_actions=3)
    state = dromo.init(config, _unit_spec(), jax.random.PRNGKey(0))
    batch, key = _critic_batch(), jax.random.PRNGKey(4)
    _, plain = jax.jit(lambda a: combo.critic_step(combo_config, a, batch, key))(state.combo.agent)
    _, robust = jax.jit(lambda s: combo.critic_step(combo_config, s.combo.agent, batch, key,
                                                    dromo.regulariser(s, jax.random.PRNGKey(7))))(state)
    assert float(robust["variance_penalty"]) > 0
    np.testing.assert_allclose(float(robust["critic_loss"]) - float(plain["critic_loss"]),
                               float(robust["variance_penalty"]), rtol=1e-4)


def test_dromo_variance_actions_are_pi_f_with_f_on_the_behaviour_policy():
    """Var_{pi_f} with pi_f = f pi_beta + (1 - f) pi (f the real ratio, the weight on real data): N actions
    of pi_beta weighted f / N, then N of pi weighted (1 - f) / N. Pinned policies tell them apart:
    pi_beta at a ~ +1, pi at a ~ -1."""
    from drorl.algos import bc, combo, dromo

    f, n = 0.3, 3
    combo_config = combo.Config(model=model_based.ModelConfig(dynamics=DYNAMICS, real_ratio=f),
                                sac=sac.Config(hidden_dims=(8,)))
    config = dromo.Config(combo=combo_config, behaviour=bc.PolicyConfig(distribution="gaussian", hidden_dims=(8,)),
                          density="uniform", num_variance_actions=n)
    state = dromo.init(config, _unit_spec(), jax.random.PRNGKey(0))

    def pinned(params, sign):  # every output from the last bias: mean 5 sign, the smallest std
        out = jnp.concatenate([jnp.full(ACT_DIM, 5.0 * sign), jnp.full(ACT_DIM, -10.0)])
        return jax.tree_util.tree_map(lambda x: out if x.shape == out.shape else jnp.zeros_like(x), params)

    state = state.replace(behaviour=state.behaviour.replace(params=pinned(state.behaviour.params, 1.0)))
    agent = state.combo.agent
    agent = agent.replace(actor=agent.actor.replace(params=pinned(agent.actor.params, -1.0)))
    actions, weights = dromo._mixture_actions(state, agent, _critic_batch()["observations"], jax.random.PRNGKey(1))
    assert actions.shape == (8, 2 * n, ACT_DIM)
    assert float(actions[:, :n].min()) > 0.99 and float(actions[:, n:].max()) < -0.99
    np.testing.assert_allclose(weights, [f / n] * n + [(1 - f) / n] * n, rtol=1e-6)


def test_mopo_penalises_model_rewards_only():
    """r~ = r - lambda u on model rows; real rows carry no penalty; the stored penalty is the rolled-out
    row's max-std uncertainty (positive)."""
    np.testing.assert_allclose(mopo.penalised_rewards(jnp.array([1.0, 2.0]), jnp.array([0.5, 0.0]), 2.0), [0.0, 2.0])
    config = model_based.ModelConfig(dynamics=DYNAMICS, horizon=2, rollout_batch_size=8, rollout_every=1,
                                     retain=1, real_ratio=0.25)
    spec = _unit_spec()
    agent = sac.init(sac.Config(hidden_dims=(8,)), spec, jax.random.PRNGKey(0))
    n = 50
    data = {"observations": start_states(n), "actions": jnp.zeros((n, ACT_DIM)), "rewards": jnp.full(n, 7.0),
            "next_observations": start_states(n), "terminals": jnp.zeros(n), "initial_observations": start_states(2),
            "initial_actions": jnp.zeros((2, ACT_DIM))}
    batch = model_based.real_and_starts(config, 16, data, jax.random.PRNGKey(1))
    buffer = model_based.empty_buffer(config, spec, ("penalty",))
    _, mixed, _ = model_based.model_step(config, 16, hopper_model(), buffer, "hopper", agent, batch,
                                         jax.random.PRNGKey(2), mopo.max_std_penalty)
    penalty, is_real = np.asarray(mixed["penalty"]), np.asarray(mixed["is_real"])
    assert is_real.sum() == 4 and np.all(penalty[is_real == 1] == 0.0) and np.all(penalty[is_real == 0] > 0.0)


def test_the_suite_trains_each_datasets_ensemble_before_its_jobs(tmp_path):
    """prepare trains the one ensemble the smoke profile's five variants share, where each job's own prepare
    step will look for it, so jobs run in parallel never train it themselves."""
    profile = suite.PROFILES["smoke"]
    suite.prepare(profile, tmp_path)
    jobs = suite.jobs_of(profile, tmp_path)
    dataset, _ = suite.load_dataset("hopper", "medium", profile.transitions, tmp_path)
    paths = {dynamics.cache_path(tmp_path / "dynamics", suite.model_config(j).dynamics, dataset,
                                 suite.model_config(j).model_seed) for j in jobs}
    assert len(jobs) == 5 and len(paths) == 1
    (path,) = paths
    assert path.is_file() and path.with_suffix(".json").is_file()
    written = sorted(p.name for p in (tmp_path / "dynamics").iterdir())
    assert written == sorted([path.name, path.with_suffix(".json").name])
