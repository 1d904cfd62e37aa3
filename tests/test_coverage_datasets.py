"""Coverage-restricted batch datasets for the Stackelberg experiments (issue 20): confinement to a region of
the state space and trajectory subsampling, each recorded in the metadata, made by `drorl datasets generate`
from the CartPole DQN zoo."""

import numpy as np
import pytest
from typer.testing import CliRunner

from drorl.cli import app
from drorl.data import corrupt
from drorl.data.dataset import Dataset
from drorl.data.generate import generate
from drorl.data.hdf5 import read_hdf5
from drorl.errors import DrorlError


def episodes_dataset():
    """Three episodes of 4 rows; observation column 0 per row as listed. Episode 0 leaves [-1, 1] at its
    third row, episode 1 stays inside and terminates, episode 2 starts outside."""
    x = np.array([0.0, 0.5, 1.5, 0.2, 0.1, -0.3, 0.9, 0.0, 2.0, 0.0, 0.0, 0.0], np.float32)
    obs = np.stack([x, np.arange(12, dtype=np.float32)], axis=1)
    terminals, timeouts = np.zeros(12, bool), np.zeros(12, bool)
    timeouts[3], terminals[7], timeouts[11] = True, True, True
    return Dataset.from_arrays({"observations": obs, "actions": np.zeros((12, 1), np.float32),
                                "rewards": np.ones(12, np.float32), "next_observations": obs + 1,
                                "terminals": terminals, "timeouts": timeouts}, metadata={"corruptions": []})


def test_confinement_cuts_each_episode_where_it_first_leaves_the_region():
    confined = corrupt.confine_to_region(episodes_dataset(), 0, -1.0, 1.0)
    np.testing.assert_array_equal(confined.observations[:, 1], [0, 1, 4, 5, 6, 7])  # row 3 came back: still cut
    assert np.all(np.abs(confined.observations[:, 0]) <= 1.0)
    # the cut episode ends in a time-out (it went on), the one that terminated inside keeps its terminal
    np.testing.assert_array_equal(confined.timeouts, [False, True, False, False, False, False])
    np.testing.assert_array_equal(confined.terminals, [False, False, False, False, False, True])
    assert confined.num_episodes == 2
    assert confined.metadata["corruptions"] == [{
        "type": "confine_to_region", "dim": 0, "low": -1.0, "high": 1.0, "rows_kept": 6, "rows_total": 12,
        "episodes_kept": 2, "episodes_total": 3, "episodes_cut": 1}]
    with pytest.raises(DrorlError, match="every episode starts outside"):
        corrupt.confine_to_region(episodes_dataset(), 0, 5.0, 6.0)
    with pytest.raises(DrorlError, match="expected DIM:LOW:HIGH"):
        corrupt.parse_region("0:-1")
    assert corrupt.parse_region("2:-0.1:0.1") == (2, -0.1, 0.1)


def test_cartpole_coverage_dataset_from_the_zoo_records_what_was_done(tmp_path):
    """`drorl datasets generate cartpole medium` with subsampling and confinement: rollouts of the zoo's
    DQN policy (integer actions), then the two corruptions, each in the metadata, and the data confined."""
    out = tmp_path / "cartpole.hdf5"
    result = CliRunner().invoke(app, ["datasets", "generate", "cartpole", "medium", "--transitions", "1500",
                                      "--subsample", "0.5", "--confine", "0:-0.3:0.3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    dataset = read_hdf5(out)
    meta = dataset.metadata
    assert meta["env"] == "cartpole" and meta["kind"] == "medium" and meta["behavior_policy"] == "cartpole-medium"
    assert [c["type"] for c in meta["corruptions"]] == ["subsample_episodes", "confine_to_region"]
    assert meta["corruptions"][1]["rows_kept"] == len(dataset) < meta["corruptions"][1]["rows_total"]
    assert np.all(np.abs(dataset.observations[:, 0]) <= 0.3)
    assert set(np.unique(dataset.actions)) <= {0.0, 1.0}


def test_discrete_medium_replay_is_refused():
    with pytest.raises(DrorlError, match="needs continuous actions"):
        generate("cartpole", "medium-replay", transitions=100, progress=False)
