"""The aggregate statistics against values computed by hand on small score matrices."""

import numpy as np
import pytest
from scipy import stats

from drorl import aggregates as agg
from drorl.errors import DrorlError

# 3 runs x 2 tasks; per-task means 20 and 70
SCORES = np.array([[10.0, 50.0], [30.0, 70.0], [20.0, 90.0]])


def test_point_aggregates_by_hand():
    assert agg.aggregate_mean(SCORES) == pytest.approx(45.0)
    assert agg.aggregate_median(np.array([[1.0, 5.0, 3.0]])) == pytest.approx(3.0)
    # pooled and sorted: 10 20 30 50 70 90; one cut at each end -> mean(20, 30, 50, 70)
    assert agg.interquartile_mean(SCORES) == pytest.approx(42.5)
    # shortfalls below 100: 90 50 70 30 80 10
    assert agg.optimality_gap(SCORES) == pytest.approx(330 / 6)
    # below 60: 50 10 30 0 40 0
    assert agg.optimality_gap(SCORES, threshold=60.0) == pytest.approx(130 / 6)


def test_iqm_is_scipys_quarter_trimmed_mean():
    scores = np.random.default_rng(0).normal(size=(7, 3))
    assert agg.interquartile_mean(scores) == pytest.approx(stats.trim_mean(scores, 0.25, axis=None))
    assert agg.interquartile_mean(np.arange(1.0, 9.0).reshape(4, 2)) == pytest.approx(4.5)  # mean of 3..6


def test_statistics_reduce_each_replicate_separately():
    samples = np.random.default_rng(1).normal(size=(4, 5, 3))
    for statistic in agg.AGGREGATES.values():
        assert np.allclose(statistic(samples), [statistic(s) for s in samples])


def test_bootstrap_interval_by_hand():
    # one task, runs 0 and 1: a resampled mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4,
    # so the 2.5 and 97.5 percentiles are 0 and 1
    estimate = agg.bootstrap_estimate(agg.aggregate_mean, np.array([[0.0], [1.0]]))
    assert (estimate.value, estimate.low, estimate.high) == (0.5, 0.0, 1.0)
    # one run per task: every resample is the data itself
    single = agg.bootstrap_estimate(agg.interquartile_mean, np.array([[3.0, 7.0, 9.0]]))
    assert single.low == single.value == single.high == pytest.approx(19 / 3)  # 3 scores: nothing cut


def test_bootstrap_is_stratified_by_task():
    # each task's runs agree, so resampling within tasks never changes the mean; pooled resampling would
    scores = np.array([[0.0, 100.0], [0.0, 100.0]])
    estimates = agg.aggregate_estimates(scores)
    assert (estimates["mean"].low, estimates["mean"].high) == (50.0, 50.0)


def test_bootstrap_is_seeded():
    scores = np.random.default_rng(2).uniform(0, 100, size=(5, 4))
    assert agg.aggregate_estimates(scores, seed=3) == agg.aggregate_estimates(scores, seed=3)
    iqm = agg.aggregate_estimates(scores)["IQM"]
    assert iqm.low < iqm.value < iqm.high


def test_probability_of_improvement_by_hand():
    # task 1: x {3, 4} beats y {1, 2} in all 4 pairs; task 2: x {0, 1} vs y {1, 1}: two losses, two ties
    x = np.array([[3.0, 0.0], [4.0, 1.0]])
    y = np.array([[1.0, 1.0], [2.0, 1.0]])
    assert agg.probability_of_improvement(x, y).value == pytest.approx((1.0 + 0.25) / 2)
    assert agg.probability_of_improvement(y, x).value == pytest.approx(1 - 0.625)
    assert agg.probability_of_improvement(x, x).value == pytest.approx(0.5)
    sure = agg.probability_of_improvement(np.array([[5.0], [5.0]]), np.array([[1.0], [2.0], [3.0]]))
    assert (sure.value, sure.low, sure.high) == pytest.approx((1.0, 1.0, 1.0))
    # one task, x {0, 2} vs y {1}: 0.5; resamples give 0 (x = {0, 0}), 0.5 or 1 ({2, 2})
    spread = agg.probability_of_improvement(np.array([[0.0], [2.0]]), np.array([[1.0]]))
    assert (spread.value, spread.low, spread.high) == pytest.approx((0.5, 0.0, 1.0))


def test_probability_of_improvement_needs_the_same_tasks():
    with pytest.raises(DrorlError, match="x has 2 tasks and y 1"):
        agg.probability_of_improvement(np.zeros((2, 2)), np.zeros((2, 1)))


def test_performance_profile_by_hand():
    scores = np.array([[10.0, 50.0], [30.0, 70.0]])
    profile = agg.performance_profile(scores, [0.0, 20.0, 60.0, 100.0])
    # task 1 {10, 30}: 1, 1/2, 0, 0 above the taus; task 2 {50, 70}: 1, 1, 1/2, 0
    assert np.allclose(profile.fraction, [1.0, 0.75, 0.25, 0.0])
    assert np.all(profile.low <= profile.fraction) and np.all(profile.fraction <= profile.high)
    assert profile.low[0] == profile.high[0] == 1.0 and profile.low[-1] == profile.high[-1] == 0.0


def test_tables_and_profile_plot(tmp_path):
    from drorl.plot import plot_performance_profiles

    scores = {"A": SCORES, "B": SCORES - 10.0}
    table = agg.aggregate_table(scores)
    assert table.splitlines()[0] == "| method | runs x tasks | median | IQM | mean | optimality gap |"
    assert table.splitlines()[2].startswith("| A | 3 x 2 | 45.0 [") and "| 42.5 [" in table.splitlines()[2]
    improvement = agg.improvement_table(scores, [("A", "B")])
    assert improvement.splitlines()[2].startswith("| A | B | 0.")
    section = agg.aggregate_section(scores, [("A", "B")], "the nominal score")
    assert table in section and improvement in section
    taus = agg.profile_taus(scores)
    assert taus[0] == 0.0 and taus[-1] == 90.0
    png = plot_performance_profiles([(m, agg.performance_profile(s, taus)) for m, s in scores.items()],
                                    tmp_path / "profiles.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_bad_scores_are_refused():
    with pytest.raises(DrorlError, match="B: every score must be finite"):
        agg.aggregate_table({"B": np.array([[np.nan]])})
    with pytest.raises(DrorlError, match=r"expected a \[runs, tasks\] matrix"):
        agg.aggregate_estimates(np.zeros(3))
    with pytest.raises(DrorlError, match="no method 'C'"):
        agg.improvement_table({"A": SCORES}, [("A", "C")])
