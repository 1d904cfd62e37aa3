"""``drorl report``: the aggregate report of run directories, on hand-written eval.json files."""

import json
import sys

import pytest

from drorl.errors import DrorlError
from drorl.io_utils import write_json_atomic
from drorl.run_report import write_run_report


def make_run(path, algorithm, env, dataset, per_seed, config=None, families=(), label=None):
    """A finished run directory: config.json and an eval.json with the given per-seed returns (reference 0..100,
    so returns are normalised scores)."""
    point = {"return_mean": sum(per_seed) / len(per_seed), "return_std": 0.0,
             "normalized_mean": sum(per_seed) / len(per_seed), "per_seed": per_seed}
    result = {"env": env, "episodes": 1, "reference": {"min": 0.0, "max": 100.0, "source": "given"},
              "nominal": point, "sweeps": {f: [{"value": v, **point} for v in (0.5, 1.5)] for f in families},
              "summary": {}, "algorithm": algorithm, "seeds": list(range(len(per_seed)))}
    if label:
        result["label"] = label
    write_json_atomic(path / "eval.json", result)
    write_json_atomic(path / "config.json", {"algorithm": algorithm, "config": config or {"lr": 0.001},
                                             "dataset": {"id": dataset}, "env": env})
    return path


def test_report_pools_seeds_per_method_and_task(tmp_path):
    runs = []
    # A: one run directory per seed (a sweep's cells); B: one run with both seeds
    for task, a_scores, b_scores in (("hopper", (10.0, 30.0), (0.0, 20.0)), ("walker2d", (50.0, 70.0), (40.0, 60.0))):
        for seed, score in enumerate(a_scores):
            runs.append(make_run(tmp_path / f"{task}-a-{seed}", "a", task, f"{task}-medium", [score],
                                 families=("gravity",)))
        runs.append(make_run(tmp_path / f"{task}-b", "b", task, f"/data/{task}-medium.hdf5", list(b_scores),
                             families=("gravity",)))
    report = write_run_report(runs, tmp_path / "report", reference="a")
    text = report.read_text()
    assert "6 run directories: 2 methods on 2 tasks" in text
    # A: 10 30 50 70; per-task means 20 and 60: median and mean 40; IQM mean(30, 50) = 40; gap mean(90 70 50 30)
    assert "| a | 2 x 2 | 40.0 [" in text and "| 60.0 [" in text
    assert "| a | b | 0.75 [" in text  # hopper: 10>0, 30>0, 30>20 of 4 pairs; walker2d the same
    assert "## Robustness: AUC averaged over gravity" in text
    assert "| method | hopper / hopper-medium | walker2d / walker2d-medium |" in text
    assert (tmp_path / "report" / "profiles.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "report" / "aggregates.json").read_text())
    assert summary["nominal"]["a"]["optimality gap"]["value"] == pytest.approx(60.0)
    assert summary["nominal"]["b"]["IQM"]["value"] == pytest.approx(30.0)
    # the parent directory stands for every finished run under it
    assert write_run_report([tmp_path], tmp_path / "again", reference="a").read_text() == text


def test_same_algorithm_with_different_configs_are_different_methods(tmp_path):
    runs = [make_run(tmp_path / "slow", "bc", "hopper", "hopper-medium", [1.0, 2.0], {"policy": {"lr": 0.001}}),
            make_run(tmp_path / "fast", "bc", "hopper", "hopper-medium", [3.0, 4.0], {"policy": {"lr": 0.01}}),
            make_run(tmp_path / "other", "cql", "hopper", "hopper-medium", [5.0, 6.0]),
            make_run(tmp_path / "alone", "cql", "walker2d", "walker2d-medium", [5.0, 6.0])]
    text = write_run_report(runs, tmp_path / "report").read_text()
    assert "| bc policy.lr=0.001 | 2 x 1 |" in text and "| bc policy.lr=0.01 | 2 x 1 |" in text
    assert "Left out (not run by every method): walker2d / walker2d-medium." in text
    assert "| cql | 2 x 1 |" in text


def test_report_refusals(tmp_path):
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(DrorlError, match="unfinished/eval.json: missing"):
        write_run_report([tmp_path / "unfinished"], tmp_path / "report")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "eval.json").write_text('{"score": 1}')
    with pytest.raises(DrorlError, match="foreign/eval.json: not what drorl evaluate writes"):
        write_run_report([tmp_path / "foreign"], tmp_path / "report")
    runs = [make_run(tmp_path / "h", "a", "hopper", "hopper-medium", [1.0, 2.0]),
            make_run(tmp_path / "w", "a", "walker2d", "walker2d-medium", [1.0])]
    with pytest.raises(DrorlError, match="a: different numbers of seeds per task"):
        write_run_report(runs, tmp_path / "report")
    with pytest.raises(DrorlError, match="no task was run by every method"):
        write_run_report([runs[0], make_run(tmp_path / "b", "b", "ant", "ant-medium", [1.0])], tmp_path / "report")
    with pytest.raises(DrorlError, match="--reference c: no such method"):
        write_run_report(runs[:1], tmp_path / "report", reference="c")


def test_report_command(tmp_path, monkeypatch, capsys):
    from drorl import cli

    runs = [make_run(tmp_path / name, name, "hopper", "hopper-medium", [1.0, 2.0]) for name in ("a", "b")]
    monkeypatch.setattr(sys, "argv", ["drorl", "report", *map(str, runs), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None) and "report.md" in capsys.readouterr().out
    assert "| a | b | 0.50 [" in (tmp_path / "out" / "report.md").read_text()
