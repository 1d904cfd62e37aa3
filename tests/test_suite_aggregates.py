"""Every suite's report carries the aggregates over tasks (IQM with bootstrap intervals), checked on
synthetic evaluation results so that nothing trains."""

import dataclasses

import numpy as np


def fake_eval(per_seed: list[float], families: tuple[str, ...] = ()) -> dict:
    """eval.json content with the given per-seed returns, nominal and at every grid point (reference 0..100)."""
    point = {"return_mean": float(np.mean(per_seed)), "return_std": 0.0, "normalized_mean": float(np.mean(per_seed)),
             "per_seed": per_seed}
    return {"env": "inverted-pendulum", "episodes": 1, "reference": {"min": 0.0, "max": 100.0, "source": "given"},
            "nominal": point, "sweeps": {f: [{"value": v, **point} for v in (0.9, 1.1)] for f in families},
            "summary": {}}


def test_robust_il_report_has_aggregates(tmp_path):
    from drorl.benchmarks import robust_il

    profile = robust_il.PROFILES["smoke"]
    jobs = robust_il.jobs_of(profile, tmp_path)
    results = [fake_eval([10.0 * i, 10.0 * i + 4], profile.families) for i, _ in enumerate(jobs)]
    text = robust_il.write_report("smoke", profile, jobs, results, tmp_path).read_text()
    assert "## Across tasks" in text and "| BC | 2 x 1 | 2.0 [0.0, 4.0] | 2.0 [0.0, 4.0] |" in text
    assert "| BE-DROIL | BC | 1.00 [1.00, 1.00] |" in text


def test_ovr_report_has_aggregates(tmp_path):
    from drorl.benchmarks import ovr

    profile = dataclasses.replace(ovr.PROFILES["smoke"], noise=(0.0, 1.0))
    jobs = ovr.jobs_of(profile, tmp_path)
    results = [fake_eval([50.0, 60.0 if job.label == "BCQ" else 70.0]) for job in jobs]
    text = ovr.write_report("smoke", profile, jobs, results, tmp_path).read_text()
    # 2 seeds x 2 datasets (clean and noisy rewards); BCQ's scores 50 50 60 60: IQM = mean(50, 60)
    assert "## Across datasets" in text and "| BCQ | 2 x 2 | 55.0 [" in text
    assert "| BCQ+OVR | BCQ | " in text


def test_safety_report_aggregates_the_safe_episode_and_goal_rates(tmp_path):
    """Returns have no reference scale on the safety tasks: the aggregates are over the safe-episode rate
    (100 minus the violation rate) and the goal rate, a task's test families being the strata."""
    from drorl.benchmarks import safety

    profile = safety.PROFILES["smoke"]
    jobs = safety.jobs_of(profile, tmp_path)
    results = [{**{name: {"returns": 1.0, "reached": 0.5, "violated": 0.5 if job.label == "DSRL" else 1.0,
                          "violating_fraction": 0.0} for name in safety.families(profile.radius)},
                "trajectory": [[0.0, 0.0], [0.1, 0.1]]} for job in jobs]
    text = safety.write_report("smoke", profile, jobs, results, tmp_path).read_text()
    assert "## Across tasks and test families" in text and "interquartile mean" in text
    # one seed x four test families: DSRL's safe-episode rate is 50 (optimality gap 50: its violation rate)
    # and so is its goal rate; every other method violates in every episode (safe-episode rate 0)
    fifty = "50.0 [50.0, 50.0]"
    assert text.count(f"| DSRL | 1 x 4 | {fifty} | {fifty} | {fifty} | {fifty} |") == 2
    assert "| DDPG | 1 x 4 | 0.0 [0.0, 0.0] | 0.0 [0.0, 0.0] | 0.0 [0.0, 0.0] | 100.0 [100.0, 100.0] |" in text
    # DSRL beats every other method on the safe-episode rate and ties them on the goal rate
    assert text.count("| DSRL | DDPG | 1.00 [1.00, 1.00] |") == 1 and text.count("| DSRL | DDPG | 0.50 [") == 1


def test_safety_report_tests_the_claim_with_welch_and_holm(tmp_path):
    """DSRL minus each other method per test family, for the violation rate, the goal rate and the return: a
    Welch interval over seeds and the verdict after Holm's correction over every comparison of the report."""
    from drorl.benchmarks import safety

    profile = dataclasses.replace(safety.PROFILES["smoke"], seeds=(0, 1, 2))
    jobs = safety.jobs_of(profile, tmp_path)
    violated = {"DSRL": (0.10, 0.15, 0.05), "DDPG": (0.60, 0.70, 0.65)}
    results = [{**{name: {"returns": 10.0 + job.setting.seed, "reached": 0.5, "violating_fraction": 0.0,
                          "violated": violated[job.label][job.setting.seed]}
                   for name in safety.families(profile.radius)},
                "trajectory": [[0.0, 0.0], [0.1, 0.1]]} for job in jobs]
    text = safety.write_report("smoke", profile, jobs, results, tmp_path).read_text()
    assert "Holm's correction over all 12 comparisons of this report" in text  # 1 method x 3 metrics x 4 families
    rows = [line for line in text.splitlines() if line.startswith("| DDPG | ") and "Holm:" in line]
    assert len(rows) == 3  # one per metric
    violation, goal, returns = rows
    assert violation.count("-55.0 ± ") == 4 and violation.count("(lower; Holm: lower)") == 4
    assert goal.count("+0.0 ± 0.0 (ties; Holm: ties)") == 4 and returns.count("(ties; Holm: ties)") == 4
