"""The zoo pipeline on the small task: SAC run -> snapshots -> zoo build -> datasets of every kind."""

import json

import numpy as np
import pytest

from drorl import zoo
from drorl.algos import sac
from drorl.data.generate import generate
from drorl.errors import DrorlError
from drorl.online import OnlineSettings, train_online
from drorl.runs import evaluate_zoo_policy
from drorl.zoo.build import build, choose, finalists


def test_choose_expert_medium_and_replay():
    steps = [10, 20, 30, 40, 50, 60]
    returns = np.array([5.0, 20.0, 40.0, 100.0, 120.0, 90.0])
    picks = choose(steps, returns, 1 / 3, replay_snapshots=2)
    assert picks["expert"] == 4 and picks["medium"] == 2  # 40 is closest to 120 / 3
    assert picks["replay"] == [0, 1]
    # a late collapse to a third of the expert's return is not a medium policy: the way up is
    late = choose([10, 20, 30, 40, 50], np.array([10.0, 35.0, 100.0, 90.0, 33.0]), 1 / 3, 5)
    assert late["expert"] == 2 and late["medium"] == 1 and late["replay"] == [0]
    # an expert chosen elsewhere (the finalists' second round) sets the medium target too
    given = choose(steps, returns, 1 / 3, replay_snapshots=2, expert=3)
    assert given["expert"] == 3 and given["medium"] == 2


def test_finalists_are_the_best_first_round_returns_in_training_order():
    returns = np.array([3.0, 9.0, 1.0, 9.0, 7.0, 8.0])
    assert finalists(returns, 3) == [1, 3, 5]
    assert finalists(returns, 1) == [3]  # ties: the later snapshot
    assert finalists(returns, 10) == list(range(6))


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    settings = OnlineSettings(env_steps=600, start_steps=100, update_every=50, buffer_size=2000,
                              eval_every=100, eval_episodes=1, checkpoint_every=600)
    train_online("sac", "inverted-pendulum", root / "run", settings, config=sac.Config(hidden_dims=(16, 16)),
                 progress=False)
    rows = build(root / "run", replay_snapshots=2, episodes=3, zoo_dir=root / "zoo", selection_episodes=3,
                 finalist_count=2, finalist_episodes=4)
    return root / "zoo", rows


def test_build_writes_policies_and_manifest(small_zoo, monkeypatch):
    directory, rows = small_zoo
    monkeypatch.setenv("DRORL_ZOO", str(directory))
    kinds = [r.kind for r in zoo.manifest()]
    assert kinds[:2] == ["expert", "medium"] and set(kinds) <= {"expert", "medium", "replay"}
    manifest = json.loads((directory / "manifest.json").read_text())
    assert all((directory / "policies" / row["file"]).is_file() for row in manifest["policies"])
    assert all("drorl train-online sac --env inverted-pendulum" in row["command"] for row in manifest["policies"])
    # the build's own non-default options are part of the command that reproduces the policies
    assert all(row["command"].endswith("zoo build RUN --replay-snapshots 2 --episodes 3 --finalists 2 "
                                       "--finalist-episodes 4") for row in manifest["policies"])
    selection = json.loads((directory.parent / "run" / "zoo-selection.json").read_text())
    expert = next(r for r in rows if r.kind == "expert")
    best_finalist = int(np.argmax(selection["finalists"]["returns"]))
    assert len(selection["finalists"]["steps"]) == 2
    assert expert.training_steps == selection["finalists"]["steps"][best_finalist]


def test_manifest_return_is_reproduced_by_evaluate(small_zoo, monkeypatch, tmp_path):
    directory, rows = small_zoo
    monkeypatch.setenv("DRORL_ZOO", str(directory))
    expert = rows[0]
    # the manifest measured 3 stochastic episodes with seed 2000: the same evaluation gives the same number
    result = evaluate_zoo_policy(expert.id, "", episodes=3, seed=2000, out=tmp_path / "eval.json", progress=False)
    assert result["nominal"]["return_mean"] == pytest.approx(expert.return_mean, rel=1e-9)


@pytest.mark.parametrize("kind", ["medium", "expert", "medium-expert", "mixed", "medium-replay"])
def test_every_kind_generates_a_valid_dataset(small_zoo, monkeypatch, kind):
    directory, _ = small_zoo
    monkeypatch.setenv("DRORL_ZOO", str(directory))
    ds = generate("inverted-pendulum", kind, transitions=300, seed=0, progress=False)
    assert len(ds) == 300 and ds.metadata["kind"] == kind
    assert ds.metadata["ref_min_score"] < ds.metadata["ref_max_score"] and "random" in ds.metadata["ref_source"]
    inside = ~ds.episode_ends[:-1]
    np.testing.assert_array_equal(ds.next_observations[:-1][inside], ds.observations[1:][inside])
    if kind == "medium-replay":
        assert "stand-in for D4RL's replay buffer" in ds.metadata["notes"]


def test_missing_zoo_policy_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DRORL_ZOO", str(tmp_path))
    with pytest.raises(DrorlError, match="no medium policy for 'hopper'"):
        generate("hopper", "medium", transitions=10, progress=False)
    with pytest.raises(DrorlError, match="zoo policy 'nope' not found"):
        zoo.get("nope")


def test_policy_file_is_checked(tmp_path):
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"\x81\xa1a\x01")  # a msgpack map that is not a policy
    with pytest.raises(DrorlError, match="not a drorl policy file"):
        zoo.BehaviourPolicy(bad)


def test_training_command_names_every_non_default_setting():
    from drorl.zoo.build import training_command

    record = {"algorithm": "dqn", "env": "cartpole",
              "online": {"env_steps": 200000, "seed": 1, "num_envs": 1, "start_steps": 1000, "update_every": 50,
                         "updates_per_step": 1.0, "buffer_size": 200000, "eval_every": 10000, "eval_episodes": 10,
                         "checkpoint_every": 50000},
              "config": {"hidden_dims": [64, 64], "lr": 0.0001, "gamma": 0.99}}
    assert training_command(record) == ("drorl train-online dqn --env cartpole --steps 200000 --seed 1 "
                                        "--start-steps 1000 --buffer-size 200000 --set hidden_dims=64,64 "
                                        "--set lr=0.0001")


def test_datasets_made_from_a_changed_zoo_are_regenerated_or_refused(small_zoo, monkeypatch, tmp_path, capsys):
    import shutil

    from drorl.data.hdf5 import write_hdf5
    from drorl.data.registry import dataset_path, resolve

    directory = tmp_path / "zoo"
    shutil.copytree(small_zoo[0], directory)
    monkeypatch.setenv("DRORL_ZOO", str(directory))
    expert, medium = zoo.entries("inverted-pendulum", "expert")[0], zoo.entries("inverted-pendulum", "medium")[0]
    first, _, path = resolve("inverted-pendulum-expert-demos", progress=False)
    assert first.metadata["zoo_policies"] == {expert.id: expert.digest}
    stamp = path.stat().st_mtime_ns
    assert resolve("inverted-pendulum-expert-demos", progress=False)[2].stat().st_mtime_ns == stamp  # cached
    # the expert is retrained: the default demonstrations are regenerated from the new one
    expert.path.write_bytes(medium.path.read_bytes())
    again, _, _ = resolve("inverted-pendulum-expert-demos", progress=False)
    assert again.metadata["zoo_policies"] == {expert.id: medium.digest} and "regenerating" in capsys.readouterr().err
    # a dataset made with custom settings cannot be remade silently: a clear error instead
    write_hdf5(generate("inverted-pendulum", "medium", transitions=300, seed=0, progress=False),
               dataset_path("inverted-pendulum-medium"))
    shutil.copy(small_zoo[0] / "policies" / expert.file, medium.path)
    with pytest.raises(DrorlError, match="inverted-pendulum-medium.hdf5: generated from zoo policies that have "
                                         "changed since .*" + medium.id):
        resolve("inverted-pendulum-medium", progress=False)


def test_datasets_made_under_older_generation_rules_are_regenerated_or_refused(small_zoo, monkeypatch, capsys):
    from dataclasses import replace

    from drorl.data.generate import GENERATION_RULES
    from drorl.data.hdf5 import write_hdf5
    from drorl.data.registry import dataset_path, resolve

    monkeypatch.setenv("DRORL_ZOO", str(small_zoo[0]))
    current, _, path = resolve("inverted-pendulum-expert-demos", progress=False)
    assert current.metadata["generation_rules"] == GENERATION_RULES
    older = {k: v for k, v in current.metadata.items() if k != "generation_rules"}  # as drorl wrote before the stamp
    write_hdf5(replace(current, metadata=older), path)
    again, _, _ = resolve("inverted-pendulum-expert-demos", progress=False)
    assert again.metadata["generation_rules"] == GENERATION_RULES and "older rules" in capsys.readouterr().err
    custom = generate("inverted-pendulum", "medium", transitions=300, seed=0, progress=False)
    write_hdf5(replace(custom, metadata={**custom.metadata, "generation_rules": 1}),
               dataset_path("inverted-pendulum-medium"))
    with pytest.raises(DrorlError, match="inverted-pendulum-medium.hdf5: generated under older rules"):
        resolve("inverted-pendulum-medium", progress=False)
    # imported data (here an old drorl export brought back through Minari) is the user's: used as it is
    imported = replace(current, metadata={**older, "source": "minari:drorl/inverted-pendulum/expert-demos-v0"})
    write_hdf5(imported, path)
    kept, _, _ = resolve("inverted-pendulum-expert-demos", progress=False)
    assert "generation_rules" not in kept.metadata and kept.metadata["source"].startswith("minari:")
