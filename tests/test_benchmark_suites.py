import json

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
    assert (tmp_path / "bench" / "inverted-pendulum.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert len(results["inverted-pendulum/BE-DROIL"]["nominal"]) == 2  # one score per seed
    # a second run resumes: nothing is retrained and the report is identical
    assert run("smoke", tmp_path / "bench").read_text() == text
