"""drorl benchmark stackelberg: the smoke profile end to end, and the other profiles' well-formedness without
training."""

import json

import numpy as np
import pytest

from drorl.benchmarks import stackelberg as suite


def test_smoke_profile_writes_report_plot_and_results(tmp_path):
    out = tmp_path / "bench"
    text = suite.run("smoke", out).read_text()
    labels = [label for label, _, _ in suite.PROFILES["smoke"].methods]
    header = next(line for line in text.splitlines() if line.startswith("| coverage | rows"))
    assert all(f" {label} |" in header for label in labels)
    # StackelbergLearner minus each other method, per coverage level: a raw and a Holm-adjusted verdict each
    rows = [line for line in text.splitlines() if line.startswith(("| full | ", "| 10% | ")) and "Holm:" in line]
    assert len(rows) == 2 and all(line.count("Holm:") == len(labels) - 1 for line in rows)
    assert f"Holm's correction over all {2 * (len(labels) - 1)} comparisons" in text
    assert "## Diagnostics of the game" in text and "interquartile mean" in text and "P(X > Y)" in text
    assert (out / "cartpole-medium.png").read_bytes()[:4] == b"\x89PNG"
    assert "](profiles.png)" in text and (out / "profiles.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "results.json").read_text())
    full, sub = results["cartpole-medium/full/StackelbergLearner"], results["cartpole-medium/10%/StackelbergLearner"]
    assert len(full["returns"]) == 2 and sub["rows"] < full["rows"]  # one return per seed; 10 % has fewer rows
    config = json.loads((out / "cartpole-medium" / "10pct" / "BC" / "config.json").read_text())
    assert config["dataset"]["id"].endswith("+subsample(0.1)")
    assert suite.run("smoke", out).read_text() == text  # resumes: nothing retrained, the same report


def tiny_cartpole_dataset():
    """Ten CartPole-shaped episodes of 20 rows whose cart drifts right by 0.1 a step."""
    from drorl.data.dataset import Dataset

    rows, episodes = 20, 10
    obs = np.zeros((rows * episodes, 4), np.float32)
    obs[:, 0] = np.tile(0.1 * np.arange(rows), episodes)
    ends = np.tile(np.arange(rows) == rows - 1, episodes)
    return Dataset(observations=obs, actions=np.zeros((rows * episodes, 1), np.float32),
                   rewards=np.ones(rows * episodes, np.float32), next_observations=obs + 0.1,
                   terminals=ends, timeouts=np.zeros(rows * episodes, bool), metadata={})


def test_coverage_levels_cut_and_subsample_and_record_it():
    dataset = tiny_cartpole_dataset()
    confined, name = suite.coverage_dataset(dataset, "d", "medium", suite.COVERAGES["confined"])
    assert np.all(np.abs(confined.observations[:, 0]) <= 1.0) and len(confined) == 10 * 11
    assert name == "d+confine(0:-1:1)" and confined.metadata["corruptions"][0]["type"] == "confine_to_region"
    sub, name = suite.coverage_dataset(dataset, "d", "medium", suite.COVERAGES["10%"])
    assert sub.num_episodes == 1 and name == "d+subsample(0.1)"
    full, name = suite.coverage_dataset(dataset, "d", "medium", suite.COVERAGES["full"])
    assert full is dataset and name == "d"


@pytest.mark.parametrize("name", ["quick", "study", "full", "paper"])
def test_profiles_are_well_formed(name, tmp_path):
    """Every job of the profile has a registered algorithm whose config takes the job's overrides; the full and
    paper profiles have 5 seeds, CartPole of two qualities at every coverage level and the continuous task."""
    from drorl import algos
    from drorl.algos.base import replace_config

    profile = suite.PROFILES[name]
    suite.check_profile(profile)
    jobs = suite.jobs_of(profile, tmp_path)
    assert len({job.run_dir for job in jobs}) == len(jobs)  # no two jobs share a run directory
    dataset = tiny_cartpole_dataset()
    for job in jobs:
        config = replace_config(algos.get(job.algorithm, "offline").Config(), suite.config_overrides(job, dataset))
        if profile.networks is not None:
            assert all(getattr(config, key.split(".")[0]) is not None for key in suite.NETWORK_KEYS[job.algorithm])
    assert any(job.label == suite.STACKELBERG for job in jobs)
    if name in ("full", "paper"):
        assert len(profile.seeds) == 5 and set(profile.coverages) == set(suite.COVERAGES)
        assert {job.task for job in jobs} == {"cartpole-medium", "cartpole-expert", "hopper-medium"}
        hopper = {job.label: job for job in jobs if job.task == "hopper-medium"}
        assert set(hopper) == {suite.STACKELBERG, "BC", "BCQ"} and hopper[suite.STACKELBERG].setting.coverage == "full"
        labels = {label for label, _, _ in profile.methods}
        assert {"simultaneous s0", "simultaneous D", "BC", "FQI", "CQL"} <= labels
    if name == "paper":
        assert profile.steps == 1_000_000 and profile.transitions is None and profile.networks is None


def test_unknown_profile_and_task_are_one_line_errors(tmp_path):
    from drorl.errors import DrorlError

    with pytest.raises(DrorlError, match="--profile nope"):
        suite.run("nope", tmp_path)
    with pytest.raises(DrorlError, match="--tasks hopper-expert"):
        suite.run("full", tmp_path, tasks=["hopper-expert"])
