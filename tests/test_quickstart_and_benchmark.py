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

    # the families' own items have their own tests (tests/test_throughput_families.py)
    result = main(["--smoke", "--algos", "bc,dqn", "--families", "", "--out", str(tmp_path / "t.json")])
    rows = {r["algorithm"]: r for r in result["algorithms"]}
    assert set(rows) == {"bc", "dqn"}
    for row in rows.values():  # FLOPs from XLA's cost analysis, one per compiled update
        assert row["updates_per_s"] > 0 and row["flops_per_update"] > 0 and 0 < row["utilisation"]
    # a BC update on a batch of 256 does at least its 256-256 policy's forward and weight-gradient matmuls
    assert rows["bc"]["flops_per_update"] > 2 * 2 * 256 * (11 * 256 + 256 * 256 + 256 * 3)
    # the smoke runs are too short for a rate (the quick profile measures it); the loop ran for offline only
    assert rows["bc"]["train_loop_runs"] == [20, 40] and "train_loop_runs" not in rows["dqn"]
    assert result["evaluation"]["same_returns"]
    assert json.loads((tmp_path / "t.json").read_text())["profile"] == "smoke" and result["families"] == {}
    # the loop's share of the in-process rate, wall clock and CPU time, for every algorithm drorl train runs
    assert len(rows["bc"]["train_loop_fractions"]) == len(rows["bc"]["train_loop_cpu_fractions"]) == 2
    table = {line.split("|")[1].strip(): line for line in (tmp_path / "t.md").read_text().splitlines()
             if line.startswith("| ")}
    assert " % / " in table["bc"].split("|")[-2] and table["dqn"].split("|")[-2].strip() == "-"
