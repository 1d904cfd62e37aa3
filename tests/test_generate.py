import numpy as np

from drorl.data.generate import generate
from drorl.data.hdf5 import read_hdf5, write_hdf5


def test_same_seed_byte_identical(tmp_path):
    a = generate("inverted-pendulum", "random", transitions=600, seed=3, progress=False)
    b = generate("inverted-pendulum", "random", transitions=600, seed=3, progress=False)
    c = generate("inverted-pendulum", "random", transitions=600, seed=4, progress=False)
    for key, arr in a.arrays().items():
        assert arr.tobytes() == getattr(b, key).tobytes()
    assert a.content_hash() == b.content_hash() != c.content_hash()
    write_hdf5(a, tmp_path / "a.hdf5")
    assert read_hdf5(tmp_path / "a.hdf5").content_hash() == a.content_hash()


def test_rows_are_consistent_transitions():
    ds = generate("hopper", "random", transitions=2000, seed=0, progress=False)
    assert len(ds) == 2000
    inside = ~ds.episode_ends[:-1]
    # within an episode, each row's next observation is the following row's observation
    np.testing.assert_array_equal(ds.next_observations[:-1][inside], ds.observations[1:][inside])
    assert ds.terminals.any()  # random hoppers fall
    assert ds.episode_ends[-1] and (ds.terminals | ds.timeouts)[-1]
    assert np.all(np.abs(ds.actions) <= 1.0)
    assert ds.metadata["ref_min_score"] < ds.metadata["ref_max_score"]


def test_expert_demos_are_whole_expert_episodes():
    ds = generate("inverted-pendulum", "expert-demos", episodes=3, seed=0, progress=False)
    assert ds.num_episodes == 3 and ds.timeouts.sum() == 3 and not ds.terminals.any()
    np.testing.assert_array_equal(ds.episode_returns, [1000.0, 1000.0, 1000.0])
    assert ds.metadata["behavior_policy"].startswith("lqr")
    assert ds.metadata["ref_max_score"] > 900 and ds.metadata["ref_min_score"] < 100


def test_episode_count_keeps_the_first_episodes_to_start_not_the_shortest():
    """With more envs than episodes, the first N episodes to finish would be the N shortest of the batch
    (failures first); counting by start keeps env 0..N-1's first episodes, as one env per episode does."""
    from drorl.data.generate import collect
    from drorl.data.dataset import Dataset

    def push(obs):  # a deterministic policy, so both runs see the same episodes
        return np.full((len(obs), 3), 0.5, np.float32)

    wide = Dataset.from_arrays(collect("hopper", push, episodes=3, seed=2, num_envs=12, progress=False))
    narrow = Dataset.from_arrays(collect("hopper", push, episodes=3, seed=2, num_envs=3, progress=False))
    every = Dataset.from_arrays(collect("hopper", push, episodes=12, seed=2, num_envs=12, progress=False))
    np.testing.assert_array_equal(wide.observations, narrow.observations)
    np.testing.assert_array_equal(every.observations[:len(wide)], wide.observations)
    lengths = np.diff(np.r_[0, np.flatnonzero(every.episode_ends) + 1])
    # the premise: the first three to finish (the three shortest) are not env 0..2's, so the rule matters
    assert set(np.argsort(lengths, kind="stable")[:3].tolist()) != {0, 1, 2}
