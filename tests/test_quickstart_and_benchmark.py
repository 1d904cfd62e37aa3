import json

from drorl.quickstart import quickstart


def test_quickstart_in_miniature(tmp_path, capsys):
    """The quickstart's pipeline on the smoke profile (the full quickstart takes minutes)."""
    report = quickstart(tmp_path / "qs", profile="smoke")
    assert (tmp_path / "qs" / "inverted-pendulum.png").read_bytes()[:4] == b"\x89PNG"
    assert "| BE-DROIL |" in report.read_text()
    printed = capsys.readouterr().out
    assert "mean return against" in printed and "DR-BC" in printed and "nominal" in printed
    on_disk = json.loads((tmp_path / "qs" / "inverted-pendulum" / "BC" / "eval.json").read_text())
    assert set(on_disk["sweeps"]) == {"gravity"}


def test_throughput_benchmark_smoke(tmp_path):
    from tools.throughput import main

    result = main(["--smoke", "--out", str(tmp_path / "t.json")])
    row = result["algorithms"][0]
    assert row["algorithm"] == "bc" and row["updates_per_s"] > 0 and 0 < row["utilisation"]
    assert result["evaluation"]["same_returns"]
    assert json.loads((tmp_path / "t.json").read_text())["profile"] == "smoke"
