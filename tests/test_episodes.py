import pytest

from drorl.envs.episodes import EpisodeStats, summarize


def test_episode_record_sums_cost_and_counts_violating_steps():
    episode = EpisodeStats()
    for reward, info in ((1.0, {}), (2.0, {"cost": 0.5}), (0.5, {"cost": 0.0}), (-1.0, {"cost": 2.0})):
        episode.add_step(reward, info)
    assert (episode.episode_return, episode.length, episode.cost, episode.violations) == (2.5, 4, 2.5, 2)


def test_summary_averages_each_statistic_over_episodes():
    a, b = EpisodeStats(10.0, 5, 1.0, 1), EpisodeStats(20.0, 15, 0.0, 0)
    assert summarize([a, b]) == pytest.approx({"episode_return": 15.0, "episode_length": 10.0,
                                               "episode_cost": 0.5, "episode_violations": 0.5})
