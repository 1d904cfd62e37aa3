import numpy as np
import pytest

from drorl.data import corrupt
from drorl.data.dataset import Dataset
from drorl.errors import DrorlError

from conftest import make_arrays


def test_reward_noise_has_the_asked_spread_and_records_itself(small_dataset):
    big = Dataset.from_arrays(make_arrays(n=20000), metadata={"corruptions": []})
    noisy = corrupt.reward_noise(big, 1.0, seed=3)
    diff = noisy.rewards - big.rewards
    assert abs(diff.mean()) < 0.03 and abs(diff.std() - 1.0) < 0.03
    np.testing.assert_array_equal(noisy.observations, big.observations)
    assert noisy.metadata["corruptions"] == [{"type": "reward_noise", "sigma": 1.0, "seed": 3}]
    np.testing.assert_array_equal(corrupt.reward_noise(big, 1.0, seed=3).rewards, noisy.rewards)
    assert big.metadata["corruptions"] == []  # the input is untouched


def test_subsample_keeps_whole_episodes(small_dataset):
    sub = corrupt.subsample_episodes(small_dataset, 0.5, seed=1)
    assert sub.num_episodes == 3 and len(sub) == 150  # 6 episodes of 50 -> 3
    starts = set(map(tuple, sub.initial_observations))
    assert starts <= set(map(tuple, small_dataset.initial_observations))
    assert sub.metadata["corruptions"][-1]["episodes_kept"] == 3
    with pytest.raises(DrorlError, match="--subsample 0"):
        corrupt.subsample_episodes(small_dataset, 0.0)
