import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drorl import checkpoint
from drorl.algos import bc
from drorl.algos.base import Spec
from drorl.data.dataset import Dataset
from drorl.data.hdf5 import write_hdf5
from drorl.train import RunSettings, init_states, load_states, policy_fn, train

from conftest import make_arrays


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _assert_trees_equal(a, b):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_same_seed_same_numbers(tmp_path, small_dataset):
    settings = RunSettings(steps=300, seeds=(0, 1), updates_per_call=100)
    s1, _ = train("bc", small_dataset, tmp_path / "a", settings, progress=False)
    s2, _ = train("bc", small_dataset, tmp_path / "b", settings, progress=False)
    _assert_trees_equal(s1.policy.params, s2.policy.params)
    m1 = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    m2 = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]  # noqa: E731
    assert strip(m1) == strip(m2) and len(m1) == 6
    # different seeds under vmap are different runs
    assert not np.array_equal(_leaves(s1.policy.params)[0][0], _leaves(s1.policy.params)[0][1])


def test_resume_equals_uninterrupted(tmp_path, small_dataset):
    full, _ = train("bc", small_dataset, tmp_path / "full",
                    RunSettings(steps=400, seeds=(0, 1), updates_per_call=100, checkpoint_every=100),
                    progress=False)
    train("bc", small_dataset, tmp_path / "part",
          RunSettings(steps=200, seeds=(0, 1), updates_per_call=100, checkpoint_every=100), progress=False)
    resumed, _ = train("bc", small_dataset, tmp_path / "part",
                       RunSettings(steps=400, seeds=(0, 1), updates_per_call=100, checkpoint_every=100),
                       progress=False)
    _assert_trees_equal(full, resumed)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [100, 100, 200, 200, 300, 300, 400, 400]


def test_resume_refuses_a_different_run(tmp_path, small_dataset):
    from drorl.errors import DrorlError

    train("bc", small_dataset, tmp_path / "r", RunSettings(steps=100, seeds=(0,), updates_per_call=100),
          progress=False)
    with pytest.raises(DrorlError, match="different .seeds."):
        train("bc", small_dataset, tmp_path / "r", RunSettings(steps=100, seeds=(1,), updates_per_call=100),
              progress=False)
    with pytest.raises(DrorlError, match="different 'config' .policy.lr: 0.0001 there, 0.001 here."):
        train("bc", small_dataset, tmp_path / "r", RunSettings(steps=100, seeds=(0,), updates_per_call=100),
              config=bc.Config(policy=bc.PolicyConfig(lr=1e-3)), progress=False)


def test_resume_accepts_a_run_from_before_a_config_field_existed(tmp_path, small_dataset):
    """A field added to a Config later, at its default, is what an older run used: it still resumes."""
    from drorl.errors import DrorlError

    settings = RunSettings(steps=100, seeds=(0,), updates_per_call=100)
    train("bc", small_dataset, tmp_path / "r", settings, progress=False)
    path = tmp_path / "r" / "config.json"
    record = json.loads(path.read_text())
    del record["config"]["policy"]["lr_decay"]  # as written by a version without the field
    path.write_text(json.dumps(record))
    train("bc", small_dataset, tmp_path / "r", dataclasses.replace(settings, steps=200), progress=False)
    assert json.loads(path.read_text())["config"]["policy"]["lr_decay"] == bc.PolicyConfig().lr_decay
    record["config"]["policy"]["lr_decay"] = 0.5  # but not a run that used another value
    path.write_text(json.dumps(record))
    with pytest.raises(DrorlError, match="policy.lr_decay: 0.5 there, 0.9 here"):
        train("bc", small_dataset, tmp_path / "r", dataclasses.replace(settings, steps=300), progress=False)


def test_checkpoint_round_trip_and_keep(tmp_path, small_dataset):
    spec = Spec.from_dataset(small_dataset)
    states, rngs = init_states(bc, bc.Config(policy=bc.PolicyConfig(hidden_dims=(8,))), spec, [3, 4])
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, (states, rngs), keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_000000002.msgpack",
                                                                        "step_000000003.msgpack"]
    step, restored = checkpoint.load(checkpoint.latest(tmp_path), (states, rngs))
    assert step == 3
    _assert_trees_equal((states, rngs), restored)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_bc_learns_a_known_mapping(tmp_path):
    """Actions are tanh(0.5 s W): BC's deterministic policy fits them to small error."""
    ds = Dataset.from_arrays(make_arrays(n=2000, obs_dim=4, act_dim=2))
    config = bc.Config(policy=bc.PolicyConfig(lr=1e-3, lr_decay=1.0))
    states, run = train("bc", ds, tmp_path / "bc", RunSettings(steps=1500, seeds=(0,), updates_per_call=500),
                        config=config, progress=False)
    first, last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][::2]
    assert last["loss"] < 0.05 * first["loss"] + 1e-3
    _, _, loaded = load_states(run)
    obs = ds.observations[:256]
    pred = np.asarray(jax.vmap(lambda st: bc.act(st, obs, jax.random.PRNGKey(0), True))(loaded))[0]
    assert np.mean((pred - ds.actions[:256]) ** 2) < 5e-3


def test_gaussian_bc_runs_and_nll_decreases(tmp_path):
    ds = Dataset.from_arrays(make_arrays(n=1000, obs_dim=4, act_dim=2))
    config = bc.Config(policy=bc.PolicyConfig(distribution="gaussian", lr=1e-3, lr_decay=1.0, hidden_dims=(64, 64)))
    _, run = train("bc", ds, tmp_path / "g", RunSettings(steps=1000, seeds=(0,), updates_per_call=250),
                   config=config, progress=False)
    losses = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] - 1.0


def _cli(*args):
    return [sys.executable, "-m", "drorl.cli", *args]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    """Acceptance check: kill -9 mid-run, start again with the same --out, same final parameters."""
    data = write_hdf5(Dataset.from_arrays(make_arrays(n=2000), metadata={"env": "inverted-pendulum"}),
                      tmp_path / "ip.hdf5")
    args = ["train", "bc", "--dataset", str(data), "--steps", "3000", "--seeds", "0,1", "--log-every", "100",
            "--checkpoint-every", "500", "--quiet", "--set", "policy.hidden_dims=64,64"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    subprocess.run(_cli(*args, "--out", str(tmp_path / "ref")), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*args, "--out", str(killed)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "checkpoints" / "step_000000500.msgpack").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoints" / "step_000003000.msgpack").exists(), "the run finished before the kill"
    subprocess.run(_cli(*args, "--out", str(killed)), check=True, env=env, capture_output=True)

    ref = (tmp_path / "ref" / "checkpoints" / "step_000003000.msgpack").read_bytes()
    assert (killed / "checkpoints" / "step_000003000.msgpack").read_bytes() == ref
    lines = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert sorted((x["step"], x["seed"]) for x in lines) == [(s, seed) for s in range(100, 3001, 100)
                                                            for seed in (0, 1)]


def test_library_train_takes_the_action_box_from_the_datasets_task(tmp_path):
    """train() without a spec reads the dataset's task: inverted pendulum's actions span [-3, 3], not
    [-1, 1], so a policy trained through the library path can use its whole range."""
    arrays = make_arrays(n=400, obs_dim=4, act_dim=1)
    arrays["actions"] = 3.0 * arrays["actions"]
    ds = Dataset.from_arrays(arrays, metadata={"env": "inverted-pendulum"})
    states, run = train("bc", ds, tmp_path / "r", RunSettings(steps=20, seeds=(0,), updates_per_call=20),
                        progress=False)
    spec = json.loads((run / "config.json").read_text())["spec"]
    assert spec["action_low"] == [-3.0] and spec["action_high"] == [3.0] and spec["task"] == "inverted-pendulum"
    assert float(states.scaler.action_high[0, 0]) == 3.0


def test_evaluation_keys_differ_between_calls_and_seeds(tmp_path, small_dataset):
    """policy_fn folds the call and the seed into the acting key: BCQ (which samples candidates even when
    acting "deterministically") acts differently on repeated calls; BC does not depend on the key."""
    from drorl.algos import bcq

    config = bcq.Config(vae_hidden_dims=(16,), hidden_dims=(16,))
    states, _ = init_states(bcq, config, Spec.from_dataset(small_dataset), [0, 1])
    obs = np.repeat(small_dataset.observations[None, :8], 2, axis=0)
    policy = policy_fn(bcq, states)
    first, second = policy(obs), policy(obs)
    assert not np.array_equal(first, second)
    same_states = jax.tree_util.tree_map(lambda x: jnp.stack([x[0], x[0]]), states)
    both = policy_fn(bcq, same_states)(obs)
    assert not np.array_equal(both[0], both[1])  # the two seeds' keys differ
    bc_states, _ = init_states(bc, bc.Config(), Spec.from_dataset(small_dataset), [0])
    bc_policy = policy_fn(bc, bc_states)
    np.testing.assert_array_equal(bc_policy(obs[:1]), bc_policy(obs[:1]))
