"""Property-based fuzzing of every file drorl reads (issue 23, acceptance check 1): valid files mutated
(truncated, corrupted, wrong dtype or rank, non-finite, empty, huge, mis-shaped for the task, unknown
metadata) are either loaded correctly or refused with a one-line DrorlError naming the file; no other
exception, and no file written. Each reader sees at least 500 mutated files, derandomised for CI."""

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drorl.data.dataset import D4RL_KEYS
from drorl.data.registry import resolve
from drorl.errors import DrorlError
from drorl.scores import spec_for, task_of

from conftest import make_arrays

FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def files_under(directory: Path) -> set[Path]:
    return {p for p in directory.rglob("*") if p.is_file()}


def loads_or_refuses(load, path: Path, named: str, watched: Path):
    """``load(path)``'s result, or None when it refused with a one-line DrorlError naming ``named``; any
    other exception fails the test, and so does a file appearing in ``watched``."""
    before = files_under(watched)
    try:
        result = load(path)
    except DrorlError as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        assert named in message, message
        result = None
    assert files_under(watched) == before
    return result


def truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def flip_bytes(path: Path, offset_fraction: float, garbage: bytes) -> None:
    data = bytearray(path.read_bytes())
    offset = int(len(data) * offset_fraction)
    data[offset:offset + len(garbage)] = garbage
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------------------
# dataset HDF5 (what `drorl train --dataset FILE` reads: the file, then the task its metadata names)

FILE_MUTATIONS = ("truncate", "flip")
ARRAY_MUTATIONS = ("dtype", "rank", "non_finite", "empty", "rows", "huge", "obs_width", "act_width",
                   "actions_out_of_box", "no_episode_ends", "drop", "group", "scalar")
METADATA_MUTATIONS = ("metadata_json", "metadata_garbage", "metadata_env", "extra_attrs")
DTYPES = (np.int64, np.float64, np.float16, np.bool_, np.uint8, "S4", np.complex64)
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**62, 2**62) | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6)


@st.composite
def hdf5_mutation(draw):
    kind = draw(st.sampled_from(FILE_MUTATIONS + ARRAY_MUTATIONS + METADATA_MUTATIONS))
    return kind, draw(st.sampled_from(D4RL_KEYS)), draw(st.integers(0, 2**31 - 1)), draw(JSON)


def write_mutated_hdf5(path: Path, kind: str, key: str, seed: int, payload) -> None:
    rng = np.random.default_rng(seed)
    arrays = make_arrays(n=int(rng.integers(1, 40)), obs_dim=4, act_dim=1, episode_len=int(rng.integers(1, 20)))
    arrays["actions"] = 2.9 * arrays["actions"]  # inverted pendulum's box is [-3, 3]
    metadata = {"env": "inverted-pendulum", "kind": "fuzz"}
    attrs: dict = {}
    arr = arrays[key]
    n = len(arr)
    if kind == "dtype":
        arrays[key] = arr.astype(DTYPES[seed % len(DTYPES)])
    elif kind == "rank":
        arrays[key] = [arr[..., None], arr.reshape(-1), arr[None]][seed % 3]
    elif kind == "non_finite" and arr.dtype.kind == "f":
        arrays[key] = arr.copy()
        arrays[key].flat[seed % arr.size] = [np.nan, np.inf, -np.inf][seed % 3]
    elif kind == "empty":
        arrays = {k: v[:0] for k, v in arrays.items()} if seed % 2 else {**arrays, key: arr[:0]}
    elif kind == "rows":
        arrays = {k: v[:1 + seed % 2] for k, v in arrays.items()}
    elif kind == "huge" and arr.dtype.kind == "f":
        arrays[key] = arr.astype(np.float64) * [1e30, 1e300, -1e39][seed % 3]
    elif kind == "obs_width":
        width = [3, 5, 11][seed % 3]
        arrays["observations"] = rng.normal(size=(n, width)).astype(np.float32)
        arrays["next_observations"] = rng.normal(size=(n, width if seed % 2 else 4)).astype(np.float32)
    elif kind == "act_width":
        arrays["actions"] = rng.uniform(-1, 1, size=(n, 2 + seed % 2)).astype(np.float32)
    elif kind == "actions_out_of_box":
        arrays["actions"] = arrays["actions"].copy()
        arrays["actions"][seed % n] = [3.5, -40.0, 1e6][seed % 3]
    elif kind == "no_episode_ends":
        arrays["terminals"][:] = False
        arrays["timeouts"][:] = False
    elif kind == "drop":
        del arrays[key]
    elif kind == "metadata_json":
        attrs["drorl_metadata"] = json.dumps(payload)
    elif kind == "metadata_garbage":
        attrs["drorl_metadata"] = "{not json" if seed % 2 else b"\xff\xfe"
    elif kind == "metadata_env":
        metadata["env"] = payload if seed % 2 else "moon"
    elif kind == "extra_attrs":
        attrs.update({"unknown": json.dumps(payload), "numbers": np.arange(3)})
    with h5py.File(path, "w") as fh:
        for k, v in arrays.items():
            if kind == "group" and k == key:
                fh.create_group(k).create_dataset("inner", data=v)
            elif kind == "scalar" and k == key:
                fh.create_dataset(k, data=v.reshape(-1)[0] if v.size else 0.0)
            else:
                fh.create_dataset(k, data=v)
        fh.attrs["drorl_metadata"] = json.dumps(metadata)
        for k, v in attrs.items():
            fh.attrs[k] = v
    if kind == "truncate":
        truncate(path, (seed % 1000) / 1000)
    elif kind == "flip":
        flip_bytes(path, (seed % 1000) / 1000, bytes(rng.integers(0, 256, size=1 + seed % 64, dtype=np.uint8)))


def load_dataset_for_training(path: Path):
    """What ``drorl train --dataset PATH`` does before training: read, find the task, build the spec."""
    dataset, name, _ = resolve(str(path), progress=False)
    task = task_of(dataset, None, name)
    return dataset, spec_for(dataset, task)


@FUZZ
@given(mutation=hdf5_mutation())
def test_fuzzed_dataset_files(tmp_path_factory, mutation):
    directory = tmp_path_factory.mktemp("hdf5", numbered=True)
    path = directory / "fuzz.hdf5"
    write_mutated_hdf5(path, *mutation)
    loaded = loads_or_refuses(load_dataset_for_training, path, "fuzz.hdf5", directory)
    if loaded is not None:
        dataset, spec = loaded
        assert len(dataset) >= 1 and all(np.isfinite(getattr(dataset, k)).all() for k in D4RL_KEYS[:4])
        assert all(len(getattr(dataset, k)) == len(dataset) for k in D4RL_KEYS)
        if spec.task is not None:
            assert dataset.obs_dim == spec.obs_dim and (dataset.actions >= spec.action_low - 1e-3).all()
    shutil.rmtree(directory)


# ---------------------------------------------------------------------------------------------------------
# run directories: config.json and msgpack checkpoints

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished BC run (config.json, one checkpoint) and the stacked template its checkpoint loads into."""
    import flax.serialization

    from drorl.algos import bc
    from drorl.algos.base import Spec
    from drorl.data.dataset import Dataset
    from drorl.train import RunSettings, init_states, train

    run = tmp_path_factory.mktemp("run")
    dataset = Dataset.from_arrays(make_arrays(n=60), metadata={"env": "inverted-pendulum"})
    config = bc.Config(policy=bc.PolicyConfig(hidden_dims=(4,)))
    train("bc", dataset, run, RunSettings(steps=10, seeds=(0, 1), updates_per_call=10), config=config,
          progress=False)
    template = init_states(bc, config, Spec.from_dataset(dataset), [0, 1])
    checkpoint_bytes = next((run / "checkpoints").glob("*.msgpack")).read_bytes()
    return run, template, flax.serialization.msgpack_restore(checkpoint_bytes)


def nested_paths(tree, prefix=()):
    """Every path (tuple of keys) into nested dicts, inner nodes included."""
    paths = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            paths += nested_paths(value, prefix + (key,))
    return paths


def set_path(tree, path, value, delete=False):
    """``tree`` (nested dicts) with the node at ``path`` replaced by ``value`` (or removed)."""
    if not path:
        return value
    out = dict(tree)
    if len(path) == 1:
        if delete:
            out.pop(path[0], None)
        else:
            out[path[0]] = value
        return out
    out[path[0]] = set_path(tree[path[0]], path[1:], value, delete) if isinstance(tree[path[0]], dict) else value
    return out


LEAF_VALUES = (np.zeros((3, 2), np.float32), np.zeros((0,), np.float32), np.full(4, np.inf, np.float32),
               np.zeros(2, np.float64), np.array(["x"]), np.zeros((2, 2, 2), np.int8), "text", None, 7, -1, 2.5,
               {"unknown": np.ones(1)}, [1, 2])


@st.composite
def tree_mutation(draw):
    kind = draw(st.sampled_from(("truncate", "flip", "replace", "delete", "json")))
    return kind, draw(st.integers(0, 2**31 - 1)), draw(JSON)


def mutate_tree(tree, kind, seed, payload, leaf_values):
    paths = nested_paths(tree)
    path = paths[seed % len(paths)]
    if kind == "delete":
        return set_path(tree, path, None, delete=True)
    if kind == "json":
        return set_path(tree, path, payload)
    return set_path(tree, path, leaf_values[seed % len(leaf_values)])


@FUZZ
@given(mutation=tree_mutation())
def test_fuzzed_checkpoints(finished_run, tmp_path_factory, mutation):
    import flax.serialization

    from drorl import checkpoint

    run, template, raw = finished_run
    kind, seed, payload = mutation
    directory = tmp_path_factory.mktemp("ckpt", numbered=True)
    path = directory / "step_000000010.msgpack"
    if kind in ("truncate", "flip"):
        path.write_bytes(flax.serialization.msgpack_serialize(raw))
        if kind == "truncate":
            truncate(path, (seed % 1000) / 1000)
        else:
            flip_bytes(path, (seed % 1000) / 1000, np.random.default_rng(seed).bytes(1 + seed % 32))
    else:
        mutated = mutate_tree(raw, kind, seed, payload, LEAF_VALUES)
        path.write_bytes(flax.serialization.msgpack_serialize(mutated, in_place=False) if isinstance(mutated, dict)
                         else flax.serialization.msgpack_serialize({"step": 10, "tree": mutated}))
    loaded = loads_or_refuses(lambda p: checkpoint.load(p, template), path, path.name, directory)
    if loaded is not None:
        step, tree = loaded
        assert step >= 0
        for have, want in zip(jax_leaves(tree), jax_leaves(template), strict=True):
            assert have.shape == np.shape(want) and have.dtype == np.asarray(want).dtype
    shutil.rmtree(directory)


def jax_leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


@FUZZ
@given(mutation=tree_mutation())
def test_fuzzed_run_configs(finished_run, tmp_path_factory, mutation):
    from drorl.train import read_run_record

    run, _, _ = finished_run
    kind, seed, payload = mutation
    directory = tmp_path_factory.mktemp("runcfg", numbered=True)
    path = directory / "config.json"
    text = (run / "config.json").read_text()
    if kind == "truncate":
        path.write_text(text[:int(len(text) * (seed % 1000) / 1000)])
    elif kind == "flip":
        path.write_bytes(text.encode())
        flip_bytes(path, (seed % 1000) / 1000, np.random.default_rng(seed).bytes(1 + seed % 8))
    else:
        leaf_values = ("hopper", "moon", -3, 0, 1.5, True, None, [], [1, "a"], {"x": 1}, "bc", "sac")
        path.write_text(json.dumps(mutate_tree(json.loads(text), kind, seed, payload, leaf_values)))
    loaded = loads_or_refuses(read_run_record, directory, "config.json", directory)
    if loaded is not None:
        algo, record, config = loaded
        assert isinstance(config, algo.Config) and isinstance(record["seeds"], list)
    shutil.rmtree(directory)


@pytest.mark.parametrize("damage, expected", [
    (lambda run: (run / "config.json").write_text('{"algorithm": "bc", "seeds": [0]'), "not valid JSON"),
    (lambda run: (run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()),
                                                              "seeds": "0"})), "'seeds' should be"),
    (lambda run: truncate(next((run / "checkpoints").glob("*.msgpack")), 0.5), "not a drorl checkpoint"),
])
def test_a_damaged_run_directory_through_the_cli(finished_run, tmp_path, monkeypatch, capsys, damage, expected):
    import sys

    from drorl import cli

    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    damage(run)
    before = files_under(run)
    monkeypatch.setattr(sys, "argv", ["drorl", "evaluate", str(run), "--episodes", "1", "--quiet"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and expected in err and str(run) in err
    assert files_under(run) == before


# ---------------------------------------------------------------------------------------------------------
# zoo policy files

@pytest.fixture(scope="module")
def policy_files(tmp_path_factory):
    """Small policy files as drorl writes them: a DQN on cartpole and a SAC on hopper."""
    import jax

    from drorl import algos, zoo
    from drorl.online import online_spec

    directory = tmp_path_factory.mktemp("policies")
    files = {}
    for algorithm, task in (("dqn", "cartpole"), ("sac", "hopper")):
        algo = algos.get(algorithm)
        config = algo.Config(hidden_dims=(8,))
        state = algo.init(config, online_spec(task), jax.random.PRNGKey(0))
        path = zoo.save_policy(directory / f"{task}.msgpack", algorithm=algorithm, task=task, config=config,
                               params=algo.policy_params(state), scaler=state.scaler, epsilon=0.05)
        files[task] = path.read_bytes()
    return files


@FUZZ
@given(base=st.sampled_from(("cartpole", "hopper")), mutation=tree_mutation())
def test_fuzzed_policy_files(policy_files, tmp_path_factory, base, mutation):
    import flax.serialization

    from drorl import zoo

    kind, seed, payload = mutation
    directory = tmp_path_factory.mktemp("policy", numbered=True)
    path = directory / "fuzz.msgpack"
    data = policy_files[base]
    if kind in ("truncate", "flip"):
        path.write_bytes(data)
        if kind == "truncate":
            truncate(path, (seed % 1000) / 1000)
        else:
            flip_bytes(path, (seed % 1000) / 1000, np.random.default_rng(seed).bytes(1 + seed % 32))
    else:
        leaf_values = LEAF_VALUES + ("hopper", "cartpole", "dqn", "sac", "moon", 0.5, np.ones(11, np.float32),
                                     np.ones(1, np.float32), np.array([0.0, 1.0], np.float32), [64, 64])
        mutated = mutate_tree(flax.serialization.msgpack_restore(data), kind, seed, payload, leaf_values)
        path.write_bytes(flax.serialization.msgpack_serialize(mutated, in_place=False))
    policy = loads_or_refuses(zoo.BehaviourPolicy, path, str(path), directory)
    if policy is not None:
        assert policy.task in ("cartpole", "hopper") and policy.obs_dim >= 1 and policy.act_dim >= 1
    shutil.rmtree(directory)


# ---------------------------------------------------------------------------------------------------------
# Minari import (a local dataset: data/metadata.json and data/main_data.hdf5)

MINARI_ID = "drorl/fuzz/base-v0"
EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


@pytest.fixture(scope="module")
def minari_dataset(tmp_path_factory):
    """A valid local Minari dataset exported by drorl (4 episodes of inverted pendulum): its root."""
    import os

    from drorl.data.dataset import Dataset
    from drorl.data.minari_io import export_minari

    pytest.importorskip("minari")
    root = tmp_path_factory.mktemp("minari-base")
    arrays = make_arrays(n=40, obs_dim=4, act_dim=1, episode_len=10)
    arrays["next_observations"][:-1] = arrays["observations"][1:]  # one observation sequence per episode
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        export_minari(Dataset.from_arrays(arrays, metadata={"env": "inverted-pendulum", "kind": "fuzz"}), MINARI_ID)
    finally:
        os.environ.pop("MINARI_DATASETS_PATH") if previous is None else os.environ.update(
            MINARI_DATASETS_PATH=previous)
    return root


@st.composite
def minari_mutation(draw):
    target = draw(st.sampled_from(("metadata", "file", "episode")))
    kind = draw(st.sampled_from({"metadata": ("truncate", "flip", "replace", "delete", "json"),
                                 "file": ("truncate", "flip"),
                                 "episode": ARRAY_MUTATIONS[:8] + ("drop", "length")}[target]))
    return target, kind, draw(st.sampled_from(EPISODE_KEYS)), draw(st.integers(0, 2**31 - 1)), draw(JSON)


def mutate_episode(path: Path, kind: str, key: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "r+") as fh:
        group = fh[f"episode_{seed % 4}"]
        arr = group[key][()]
        del group[key]
        if kind == "drop":
            return
        if kind == "dtype":
            arr = arr.astype(DTYPES[seed % len(DTYPES)])
        elif kind == "rank":
            arr = [arr[..., None], arr.reshape(-1), arr[None]][seed % 3]
        elif kind == "non_finite" and arr.dtype.kind == "f":
            arr.flat[seed % arr.size] = [np.nan, np.inf, -np.inf][seed % 3]
        elif kind == "empty":
            arr = arr[:0]
        elif kind in ("rows", "length"):
            arr = arr[:1 + seed % 3] if seed % 2 else np.concatenate([arr, arr[:2]])
        elif kind == "huge" and arr.dtype.kind == "f":
            arr = arr.astype(np.float64) * [1e30, 1e300, -1e39][seed % 3]
        elif kind in ("obs_width", "act_width") and arr.ndim == 2:
            arr = rng.normal(size=(arr.shape[0], arr.shape[1] + 1 + seed % 3))
        group.create_dataset(key, data=arr)


def import_from(root: Path):
    import os

    from drorl.data.minari_io import import_minari

    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        return import_minari(MINARI_ID)
    finally:
        del os.environ["MINARI_DATASETS_PATH"]


@FUZZ
@given(mutation=minari_mutation())
def test_fuzzed_minari_datasets(minari_dataset, tmp_path_factory, mutation):
    target, kind, key, seed, payload = mutation
    root = tmp_path_factory.mktemp("minari", numbered=True)
    shutil.copytree(minari_dataset, root, dirs_exist_ok=True)
    data = root / MINARI_ID / "data"
    if target == "episode":
        mutate_episode(data / "main_data.hdf5", kind, key, seed)
    else:
        path = data / ("metadata.json" if target == "metadata" else "main_data.hdf5")
        if kind == "truncate":
            truncate(path, (seed % 1000) / 1000)
        elif kind == "flip":
            flip_bytes(path, (seed % 1000) / 1000, np.random.default_rng(seed).bytes(1 + seed % 32))
        else:
            leaf_values = ("inverted-pendulum", "moon", "-1", "[]", "{", "null", 3, None, [1], {"type": "Box"},
                           '{"env": "moon"}', '{"env": "hopper", "kind": "expert"}')
            path.write_text(json.dumps(mutate_tree(json.loads(path.read_text()), kind, seed, payload, leaf_values)))
    dataset = loads_or_refuses(import_from, root, MINARI_ID, root)
    if dataset is not None:
        assert len(dataset) >= 1 and all(np.isfinite(getattr(dataset, k)).all() for k in D4RL_KEYS[:4])
        if dataset.metadata.get("env") == "inverted-pendulum":
            assert dataset.obs_dim == 4 and dataset.act_dim == 1
    shutil.rmtree(root)


@pytest.mark.parametrize("command, damage", [
    ("datasets-info", lambda path: truncate(path, 0.6)),
    ("datasets-info", lambda path: flip_bytes(path, 0.0, b"\xff" * 8)),
    ("import-minari", lambda path: truncate(path, 0.3)),
])
def test_damaged_datasets_through_the_cli(minari_dataset, tmp_path, monkeypatch, capsys, command, damage):
    import sys

    from drorl import cli

    if command == "datasets-info":
        path = tmp_path / "fuzz.hdf5"
        write_mutated_hdf5(path, "rows", "observations", 3, None)
        args, named = ["datasets", "info", str(path)], "fuzz.hdf5"
    else:
        root = tmp_path / "minari"
        shutil.copytree(minari_dataset, root)
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
        path = root / MINARI_ID / "data" / "main_data.hdf5"
        args, named = ["datasets", "import-minari", MINARI_ID], MINARI_ID
    damage(path)
    before = files_under(tmp_path)
    monkeypatch.setattr(sys, "argv", ["drorl", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("drorl: ") and named in err
    assert files_under(tmp_path) == before


# ---------------------------------------------------------------------------------------------------------
# sweep configs (YAML)

SWEEP = {"algorithms": ["bc", {"name": "drbc", "label": "DR-BC", "set": {"rho": 0.2}}],
         "datasets": ["hopper-medium", "/data/my.hdf5"], "env": None, "set": {"policy.lr": [0.001, 0.0003]},
         "seeds": [0, 1, 2], "steps": 1000, "episodes": 2, "families": ["gravity"], "vmap_seeds": False}


@FUZZ
@given(mutation=tree_mutation())
def test_fuzzed_sweep_configs(tmp_path_factory, mutation):
    import yaml

    from drorl.sweep import load_sweep_config

    kind, seed, payload = mutation
    directory = tmp_path_factory.mktemp("sweep", numbered=True)
    path = directory / "sweep.yaml"
    text = yaml.safe_dump(SWEEP)
    if kind == "truncate":
        path.write_text(text[:int(len(text) * (seed % 1000) / 1000)])
    elif kind == "flip":
        path.write_bytes(text.encode())
        flip_bytes(path, (seed % 1000) / 1000, np.random.default_rng(seed).bytes(1 + seed % 8))
    else:
        leaf_values = ("bc", "moon", -3, 0, 1.5, True, None, [], [1, "a"], {"x": 1}, {1: 2}, [[1]], "a: b")
        path.write_text(yaml.safe_dump(mutate_tree(SWEEP, kind, seed, payload, leaf_values)))
    config = loads_or_refuses(load_sweep_config, path, str(path), directory)
    if config is not None:
        assert config.variants and config.datasets and config.steps > 0 and config.seeds
    shutil.rmtree(directory)
