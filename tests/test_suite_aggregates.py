"""Every suite's report carries the aggregates over tasks (IQM with bootstrap intervals), checked on
synthetic evaluation results so that nothing trains."""

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
    jobs = [robust_il.Job(task, label, algo, {}, profile, tmp_path / label, "unused")
            for task in profile.tasks for label, algo, _ in profile.variants]
    results = [fake_eval([10.0 * i, 10.0 * i + 4], profile.families) for i, _ in enumerate(jobs)]
    text = robust_il.write_report("smoke", profile, jobs, results, tmp_path).read_text()
    assert "## Across tasks" in text and "| BC | 2 x 1 | 2.0 [0.0, 4.0] | 2.0 [0.0, 4.0] |" in text
    assert "| BE-DROIL | BC | 1.00 [1.00, 1.00] |" in text


def test_ovr_report_has_aggregates(tmp_path):
    from drorl.benchmarks import ovr

    profile = ovr.PROFILES["smoke"]
    jobs = [ovr.Job(task, kind, noise, label, algo, {}, profile, tmp_path) for task in profile.tasks
            for kind in profile.kinds for noise in profile.noise for label, algo, _ in profile.variants]
    results = [fake_eval([50.0, 60.0 if job.label == "BCQ" else 70.0]) for job in jobs]
    text = ovr.write_report("smoke", profile, jobs, results, tmp_path).read_text()
    # 2 seeds x 2 datasets (clean and noisy rewards); BCQ's scores 50 50 60 60: IQM = mean(50, 60)
    assert "## Across datasets" in text and "| BCQ | 2 x 2 | 55.0 [" in text
    assert "| BCQ+OVR | BCQ | " in text
