import h5py
import numpy as np
import pytest

from drorl.data.dataset import Dataset
from drorl.data.hdf5 import read_hdf5, write_hdf5
from drorl.errors import DrorlError

from conftest import make_arrays


def test_episode_structure():
    arrays = make_arrays(n=10, episode_len=4)
    arrays["terminals"][1] = True  # episode 0 ends early at row 1
    ds = Dataset.from_arrays(arrays)
    # ends: row 1 (terminal), 3, 7 (timeouts), 9 (last row)
    np.testing.assert_array_equal(ds.episode_starts, [0, 2, 4, 8])
    np.testing.assert_array_equal(ds.episode_index, [0, 0, 1, 1, 2, 2, 2, 2, 3, 3])
    np.testing.assert_array_equal(ds.has_next_action, [1, 0, 1, 0, 1, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(ds.next_actions[0], ds.actions[1])
    np.testing.assert_array_equal(ds.next_actions[1], np.zeros_like(ds.actions[1]))
    np.testing.assert_array_equal(ds.initial_observations, ds.observations[[0, 2, 4, 8]])
    np.testing.assert_allclose(ds.episode_returns[2], arrays["rewards"][4:8].sum(), rtol=1e-6)
    assert ds.num_episodes == 4 and ds.summary()["episodes"] == 4


def test_observation_stats_and_hash(small_dataset):
    mean, std = small_dataset.observation_stats()
    np.testing.assert_allclose(mean, small_dataset.observations.mean(0), atol=1e-6)
    assert (std > 0).all()
    other = Dataset.from_arrays({**small_dataset.arrays(), "rewards": small_dataset.rewards + 1})
    assert small_dataset.content_hash() != other.content_hash()
    assert small_dataset.content_hash() == Dataset.from_arrays(small_dataset.arrays()).content_hash()


def test_hdf5_round_trip(tmp_path, small_dataset):
    path = write_hdf5(small_dataset, tmp_path / "d.hdf5")
    loaded = read_hdf5(path)
    for key, arr in small_dataset.arrays().items():
        np.testing.assert_array_equal(getattr(loaded, key), arr)
    assert loaded.metadata == small_dataset.metadata
    with h5py.File(path) as fh:  # D4RL layout: the six arrays at the root
        assert {"observations", "actions", "rewards", "next_observations", "terminals", "timeouts"} <= set(fh)
        assert fh.attrs["env"] == "inverted-pendulum"


def test_reads_a_plain_d4rl_file(tmp_path):
    arrays = make_arrays()
    path = tmp_path / "hopper_medium-v2.hdf5"
    with h5py.File(path, "w") as fh:  # as D4RL writes it: no drorl metadata, extra groups
        for key, value in arrays.items():
            fh[key] = value
        fh["infos/qpos"] = np.zeros((len(arrays["rewards"]), 3))
        fh["metadata/algorithm"] = "SAC"
    ds = read_hdf5(path)
    assert len(ds) == len(arrays["rewards"]) and ds.metadata == {}


def _write_raw(path, arrays):
    with h5py.File(path, "w") as fh:
        for key, value in arrays.items():
            fh[key] = value


@pytest.mark.parametrize("break_it, message", [
    (lambda a: a.pop("rewards"), "missing key 'rewards'"),
    (lambda a: a.update(rewards=a["rewards"][:-1]), "'rewards' has 299 rows, 'observations' has 300"),
    (lambda a: a["actions"].__setitem__((5, 0), np.nan), "'actions' has a non-finite value"),
    (lambda a: a.update(observations=a["observations"][:, 0]), "'observations' has shape"),
])
def test_bad_files_are_refused(tmp_path, break_it, message):
    arrays = make_arrays()
    break_it(arrays)
    path = tmp_path / "bad.hdf5"
    _write_raw(path, arrays)
    with pytest.raises(DrorlError) as err:
        read_hdf5(path)
    assert message in str(err.value) and "bad.hdf5" in str(err.value)
    assert "\n" not in str(err.value)


def test_not_hdf5(tmp_path):
    path = tmp_path / "x.hdf5"
    path.write_text("hello")
    with pytest.raises(DrorlError, match="not a readable HDF5 file"):
        read_hdf5(path)


def test_failed_write_leaves_no_file(tmp_path, small_dataset, monkeypatch):
    import drorl.data.hdf5 as mod

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mod.json, "dumps", boom)
    with pytest.raises(RuntimeError):
        write_hdf5(small_dataset, tmp_path / "out.hdf5")
    assert list(tmp_path.iterdir()) == []
