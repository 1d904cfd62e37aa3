"""Property-based fuzzing of every file drorl reads (issue 23, acceptance check 1): valid files mutated
(truncated, corrupted, wrong dtype or rank, non-finite, empty, huge, mis-shaped for the task, unknown
metadata) are either loaded correctly or refused with a one-line DrorlError naming the file; no other
exception, and no file written. Each reader sees at least 500 mutated files, derandomised for CI."""

import dataclasses
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
    path.write_bytes(bytes(data[:len(data)]))


# ---------------------------------------------------------------------------------------------------------
# dataset HDF5 (what `drorl train --dataset FILE` reads: the file, then the task its metadata names)

FILE_MUTATIONS = ("truncate", "flip")
ARRAY_MUTATIONS = ("dtype", "rank", "non_finite", "empty", "rows", "huge", "obs_width", "act_width",
                   "actions_out_of_box", "no_episode_ends", "drop", "group", "scalar")
METADATA_MUTATIONS = ("metadata_json", "metadata_garbage", "metadata_env", "extra_attrs")
DTYPES = (np.int64, np.float64, np.float16, np.bool_, np.uint8, "S4", np.complex64)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
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
