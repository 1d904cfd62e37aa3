import json

from drorl.quickstart import quickstart


def test_quickstart_in_miniature(tmp_path):
    result = quickstart(tmp_path / "qs", steps=300, episodes=1, demos=2, seeds=(0,))
    assert (tmp_path / "qs" / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    report = (tmp_path / "qs" / "report.md").read_text()
    assert "| gravity |" in report and "robustness.png" in report
    on_disk = json.loads((tmp_path / "qs" / "bc" / "eval.json").read_text())
    assert on_disk["sweeps"].keys() == result["sweeps"].keys() == {"gravity", "damping", "stiffness", "action_noise"}


def test_throughput_benchmark_smoke(tmp_path):
    from benchmarks.throughput import main

    result = main(["--smoke", "--out", str(tmp_path / "t.json")])
    row = result["algorithms"][0]
    assert row["algorithm"] == "bc" and row["updates_per_s"] > 0 and 0 < row["utilisation"]
    assert result["evaluation"]["same_returns"]
    assert json.loads((tmp_path / "t.json").read_text())["profile"] == "smoke"
