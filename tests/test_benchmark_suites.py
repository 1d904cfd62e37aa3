import dataclasses
import json
import re

import pytest

from drorl.benchmarks.common import mean_and_ci
from drorl.benchmarks.robust_il import run


def test_mean_and_ci_matches_student_t():
    mean, half = mean_and_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and abs(half - 4.302652729911275 * 1.0 / 3**0.5) < 1e-9


def test_robust_il_smoke_writes_report_and_plot(tmp_path):
    report = run("smoke", tmp_path / "bench")
    text = report.read_text()
    for label in ("BC", "DR-BC", "BE-DROIL"):
        assert f"| {label} |" in text
    # the comparison rows: BE-DROIL minus BC and minus DR-BC, a raw and a Holm-adjusted verdict per column
    comparisons = [line for line in text.splitlines() if line.startswith(("| BC | ", "| DR-BC | ")) and "(" in line]
    raw = ("(ties;", "(beats;", "(loses;")
    adjusted = ("Holm: ties)", "Holm: beats)", "Holm: loses)")
    assert len(comparisons) == 2 and all(sum(map(line.count, raw)) == sum(map(line.count, adjusted)) == 3
                                         for line in comparisons)
    assert "Holm's correction over all 6 comparisons" in text
    assert (tmp_path / "bench" / "inverted-pendulum.png").read_bytes()[:4] == b"\x89PNG"
    for profiles in ("profiles.png", "profiles-auc.png"):  # performance profiles of both aggregated scores
        assert f"]({profiles})" in text and (tmp_path / "bench" / profiles).read_bytes()[:4] == b"\x89PNG"
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert len(results["inverted-pendulum/BE-DROIL"]["nominal"]) == 2  # one score per seed
    # a second run resumes: nothing is retrained and the report is identical
    assert run("smoke", tmp_path / "bench").read_text() == text
    # the smoke profile's 2-episode demonstrations stay with the benchmark, out of the registry
    from drorl.data.registry import dataset_path

    assert not dataset_path("inverted-pendulum-expert-demos").exists()
    assert (tmp_path / "bench" / "data" / "inverted-pendulum-expert-demos-2.hdf5").is_file()


def test_difference_verdict_is_a_welch_interval():
    from scipy import stats

    from drorl.benchmarks.common import difference_verdict

    a, b = [10.0, 12.0, 11.0, 13.0], [1.0, 2.0, 4.0]
    diff, half, verdict = difference_verdict(a, b)
    low, high = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx((low + high) / 2) and half == pytest.approx((high - low) / 2)
    assert verdict == "helps" and difference_verdict(b, a)[2] == "hurts"
    assert difference_verdict([1.0, 3.0], [2.0, 2.5])[2] == "ties"


def test_restrict_tasks_keeps_profile_order_and_names_what_is_missing():
    from drorl.benchmarks.common import missing_tasks_note, restrict_tasks
    from drorl.benchmarks.robust_il import PROFILES
    from drorl.errors import DrorlError

    full = PROFILES["full"]
    part = restrict_tasks(full, ["walker2d", "hopper"])
    assert part.tasks == ("hopper", "walker2d") and part.seeds == full.seeds and part.steps == full.steps
    assert restrict_tasks(full, None) is full
    assert missing_tasks_note(full, full) == []
    assert "halfcheetah, ant" in missing_tasks_note(part, full)[0]
    with pytest.raises(DrorlError, match="--tasks cartpole"):
        restrict_tasks(full, ["cartpole"])


def test_holm_rejections_by_hand():
    from drorl.benchmarks.common import holm_rejections

    # sorted 0.005 <= 0.05/4, 0.01 <= 0.05/3, 0.03 > 0.05/2: stop there (0.04 is not tested)
    assert holm_rejections([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm_rejections([0.2, 0.01]) == [False, True]
    assert holm_rejections([0.03, 0.04]) == [False, False]  # 0.03 > 0.05/2
    assert holm_rejections([0.02, 0.04]) == [True, True]  # 0.02 <= 0.025, then 0.04 <= 0.05


def test_welch_p_value_by_hand_and_holm_verdicts():
    import numpy as np
    from scipy import stats

    from drorl.benchmarks.common import Difference, holm_verdicts, welch_p_value

    a, b = [1.0, 2.0, 4.0, 3.5], [0.0, 0.5, 1.0, 0.2, 0.1]
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 5
    t = (np.mean(a) - np.mean(b)) / np.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 4)
    assert welch_p_value(a, b) == pytest.approx(2 * stats.t.sf(abs(t), dof), rel=1e-10)
    clear = Difference.of([10.0, 10.1, 9.9], [0.0, 0.1, -0.1])
    marginal = Difference.of([1.0, 2.0, 3.0], [-1.0, -0.8, -0.5])
    assert clear.verdict == "helps" and marginal.verdict == "helps" and 0.01 < marginal.p_value < 0.05
    # alone the marginal call stands; among ten comparisons Holm turns it into a tie, the clear one stays
    assert holm_verdicts([marginal]) == ["helps"]
    assert holm_verdicts([clear] + [marginal] * 9)[:2] == ["helps", "ties"]


def test_resolvable_difference_is_where_welch_reaches_five_percent():
    from drorl.benchmarks.common import pooled_seed_sd, resolvable_difference, welch_p_value

    spread = [-1.5, 0.0, 1.5]  # sample standard deviation 1.5
    d = resolvable_difference(1.5, 3)
    assert welch_p_value([d + x for x in spread], spread) == pytest.approx(0.05, rel=1e-9)
    assert pooled_seed_sd([[1.0, 3.0], [10.0, 12.0, 14.0]]) == pytest.approx(((2 + 8) / 3) ** 0.5)


def test_ovr_verdict_profile_runs_random_only_with_clean_rewards(tmp_path):
    """The verdict's cells, and its OVR with the ratio settings that settled (non-negative ratios, a warm-up
    inside the run) rather than the published defaults, under which DualDICE had not settled."""
    from drorl.algos import ovr
    from drorl.algos.base import replace_config
    from drorl.benchmarks.ovr import PROFILES, jobs_of

    jobs = jobs_of(PROFILES["verdict"], tmp_path)
    cells = {(j.task, j.setting.cell) for j in jobs}
    assert {cell for task, cell in cells} == {"medium", "mixed", "random", "medium +N(0,1²)", "mixed +N(0,1²)"}
    assert len(jobs) == 2 * 5 * 2 and {j.label for j in jobs} == {"BCQ", "BCQ+OVR"}
    ratio = replace_config(ovr.Config(), next(j for j in jobs if j.label == "BCQ+OVR").overrides, option="test").ratio
    assert ratio.positive and ratio.lr > ovr.RatioConfig().lr and 0 < ratio.warmup < PROFILES["verdict"].steps


def test_safety_full_profile_run_task_by_task_is_the_whole_profile(tmp_path):
    """The design's 80 runs, and the same 80 when the profile runs one --tasks at a time into one --out (the
    rho_d sweep belongs to the unicycle, not to whichever task a partial run lists first)."""
    from drorl.benchmarks import safety
    from drorl.benchmarks.common import restrict_tasks

    full = safety.PROFILES["full"]
    whole = {job.run_dir for job in safety.jobs_of(full, tmp_path)}
    pieces = [job.run_dir for task in full.tasks for job in safety.jobs_of(restrict_tasks(full, [task]), tmp_path)]
    assert len(whole) == 80 and len(pieces) == 80 and set(pieces) == whole


@pytest.mark.slow
def test_safety_smoke_report_carries_the_aggregates(tmp_path, monkeypatch):
    """The smoke profile end to end (DDPG and DSRL; each method compiles its online training, about 17 CPU-
    seconds, and its evaluation rollouts, about 10)."""
    from drorl.benchmarks import safety

    out = tmp_path / "bench"
    text = safety.run("smoke", out).read_text()
    assert "## Across tasks and test families" in text and "| DSRL | 1 x 4 | " in text and "P(X > Y)" in text
    results = json.loads((out / "results.json").read_text())
    assert set(results["safe-unicycle/DSRL"]) == set(safety.families(safety.PROFILES["smoke"].radius))
    assert (out / "safe-unicycle-trajectories.png").read_bytes()[:4] == b"\x89PNG"
    for profiles in ("profiles-safe-episode-rate.png", "profiles-goal-rate.png"):
        assert f"]({profiles})" in text and (out / profiles).read_bytes()[:4] == b"\x89PNG"
    # a second run resumes from safety_eval.json: nothing is retrained (a training would raise here)
    monkeypatch.setattr(safety, "train_online", lambda *args, **kwargs: pytest.fail("retrained a finished run"))
    assert safety.run("smoke", out).read_text() == text
    # a health warning a run's monitor logged reaches the report
    metrics = sorted(out.rglob("metrics.jsonl"))[0]
    with metrics.open("a") as f:
        f.write(json.dumps({"step": 300, "warning": "drift", "metric": "q_target_mean", "meaning": "the critic "
                            "diverges", "slope_per_step": 0.1, "p_value": 1e-6, "window": [100, 300], "from": 1.0,
                            "to": 21.0}) + "\n")
    text = safety.run("smoke", out).read_text()
    assert "## Training health" in text and "q_target_mean drifts without levelling off" in text


def test_a_finished_run_that_recorded_another_run_is_reused_with_a_warning(tmp_path, capsys):
    """A suite reuses a run directory's eval.json without training, and warns, naming config.json and the
    fields, when the run recorded there had another config (a profile's settings changed since, or an older
    drorl named the fields differently)."""
    import dataclasses

    import numpy as np

    from drorl.algos import bc
    from drorl.benchmarks.common import train_and_evaluate
    from drorl.data.dataset import Dataset

    rng = np.random.default_rng(0)
    dataset = Dataset.from_arrays({"observations": rng.normal(size=(20, 3)).astype(np.float32),
                                   "actions": rng.uniform(-1, 1, (20, 1)).astype(np.float32),
                                   "rewards": np.zeros(20, np.float32),
                                   "next_observations": rng.normal(size=(20, 3)).astype(np.float32),
                                   "terminals": np.zeros(20, bool), "timeouts": np.arange(20) % 10 == 9})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"algorithm": "bc", "config": dataclasses.asdict(bc.Config()),
                                                     "seeds": [0, 1], "dataset": {"hash": dataset.content_hash()}}))
    (run_dir / "eval.json").write_text(json.dumps({"nominal": {"per_seed": [1.0, 2.0]}}))

    def again(overrides, seeds=(0, 1)):
        return train_and_evaluate("bc", overrides, dataset, "tiny", "hopper", run_dir, 10, seeds, 1)

    assert again({}) == {"nominal": {"per_seed": [1.0, 2.0]}}  # reused: nothing trained (steps=10 never ran)
    assert capsys.readouterr().err == ""  # the same run: no warning
    assert again({"policy.lr": 3e-4}) == {"nominal": {"per_seed": [1.0, 2.0]}}
    assert re.search(r"drorl: warning: .*run/config.json: the existing run has a different 'config' "
                     r"\(policy.lr: 0.0001 there, 0.0003 here\).* reused anyway", capsys.readouterr().err)
    for _ in range(2):  # every time, not once per place in the code
        again({}, seeds=(0, 1, 2))
        assert "different 'seeds'" in capsys.readouterr().err


def test_ovr_smoke_is_the_paper_scale_profile_shrunk_and_runs_on_ray(tmp_path, monkeypatch):
    """The smoke profile is the full (paper-scale) profile's smoke form: its variants (BCQ and BCQ+OVR, tiny
    networks) on one small dataset with the noisy rewards (each cell costs two compilations). It runs as Ray
    tasks on a local Ray instance the test starts and writes the report, bar charts and results; a local
    rerun into the same directory then finds every run finished (the Ray worker wrote them where the suite
    looks): nothing retrained, the same report."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'drorl[ray]')")
    from drorl.benchmarks import ovr
    from drorl.data.registry import dataset_path
    from drorl.execution import Backend

    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax-cache"))
    full, smoke = ovr.PROFILES["full"], ovr.PROFILES["smoke"]
    assert full.noise == (0.0, 1.0) and set(smoke.noise) < set(full.noise) and smoke.kinds[0] in full.kinds
    assert [v[:2] for v in full.variants] == [v[:2] for v in smoke.variants]
    out = tmp_path / "bench"
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        report = ovr.SUITE.run("smoke", out, backend=Backend("ray"))
    finally:
        ray.shutdown()
    text = report.read_text()
    assert "| expert +N(0,1²) | " in text and "| expert | " not in text and "BCQ+OVR − BCQ" in text
    assert (out / "inverted-pendulum.png").read_bytes()[:4] == b"\x89PNG"
    assert "](profiles.png)" in text and (out / "profiles.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "results.json").read_text())
    assert len(results["inverted-pendulum/expert +N(0,1²)/BCQ+OVR"]) == 2  # one score per seed
    config = json.loads((out / "inverted-pendulum" / "expert-noise1" / "BCQ+OVR" / "config.json").read_text())
    assert config["dataset"]["id"].endswith("+reward_noise(1)") and config["config"]["reward_scale"] > 0
    stamps = {path: path.stat().st_mtime_ns for path in out.glob("*/*/*/eval.json")}
    assert len(stamps) == 2
    assert ovr.run("smoke", out).read_text() == text
    assert {path: path.stat().st_mtime_ns for path in out.glob("*/*/*/eval.json")} == stamps
    assert not dataset_path("inverted-pendulum-expert").exists()
    # generated at the profile's size, and named by it: a resized profile never reads the old file
    assert (out / "data" / "inverted-pendulum-expert-2000.hdf5").is_file()
