"""The command line, end to end on small data (acceptance checks of the foundation issue)."""

import json

import h5py
import numpy as np
import pytest

from cli_helpers import run_cli
from drorl.data.hdf5 import read_hdf5


def test_generate_hopper_random_and_info(tmp_path, monkeypatch, capsys):
    path = tmp_path / "hopper-random.hdf5"
    code, out, _ = run_cli(monkeypatch, capsys, "datasets", "generate", "hopper", "random",
                           "--transitions", "20000", "--out", str(path))
    assert code == 0 and path.is_file()
    with h5py.File(path) as fh:
        assert {"observations", "actions", "rewards", "next_observations", "terminals", "timeouts"} <= set(fh)
        assert fh["observations"].shape == (20000, 11)
    ds = read_hdf5(path)
    assert ds.metadata["kind"] == "random" and ds.metadata["env_id"] == "Hopper-v5"
    from drorl import zoo

    experts = [e for e in zoo.entries("hopper", "expert") if e.return_mean > ds.metadata["ref_min_score"]]
    expected = experts[-1].return_mean if experts else 3234.3  # the zoo's expert, else D4RL's constant
    assert ds.metadata["ref_max_score"] == pytest.approx(expected)
    code, out, _ = run_cli(monkeypatch, capsys, "datasets", "info", str(path))
    assert code == 0
    for word in ("transitions", "20,000", "episodes", f"{ds.num_episodes:,}", "return_mean"):
        assert word in out


def test_named_dataset_lands_in_drorl_data_and_is_listed(tmp_path, monkeypatch, capsys):
    code, _, _ = run_cli(monkeypatch, capsys, "datasets", "generate", "inverted-pendulum", "random",
                         "--transitions", "500")
    assert code == 0
    code, out, _ = run_cli(monkeypatch, capsys, "datasets", "list")
    assert "inverted-pendulum-random" in out


@pytest.mark.parametrize("key, breakage, expected", [
    ("terminals", "drop", "missing key 'terminals'"),
    ("rewards", "short", "'rewards' has 299 rows, 'observations' has 300"),
    ("observations", "nan", "'observations' has a non-finite value"),
])
def test_bad_dataset_refused_with_one_line_and_no_output(tmp_path, monkeypatch, capsys, key, breakage, expected):
    from conftest import make_arrays

    arrays = make_arrays()
    if breakage == "drop":
        arrays.pop(key)
    elif breakage == "short":
        arrays[key] = arrays[key][:-1]
    else:
        arrays[key][3, 1] = np.nan
    bad = tmp_path / "bad.hdf5"
    with h5py.File(bad, "w") as fh:
        for k, v in arrays.items():
            fh[k] = v
    out_dir = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "train", "bc", "--dataset", str(bad), "--steps", "10",
                           "--out", str(out_dir), "--quiet")
    assert code != 0
    assert err.strip().count("\n") == 0 and expected in err and "bad.hdf5" in err
    assert not out_dir.exists()
    code, _, err = run_cli(monkeypatch, capsys, "datasets", "info", str(bad))
    assert code != 0 and expected in err


def test_user_mistakes_are_one_line_errors(tmp_path, monkeypatch, capsys, small_dataset):
    from drorl.data.hdf5 import write_hdf5

    monkeypatch.setenv("DRORL_ZOO", str(tmp_path / "empty-zoo"))  # so that "hopper medium" has no policy

    small = write_hdf5(small_dataset, tmp_path / "small.hdf5")
    cases = [
        (("train", "nope", "--dataset", "x"), "unknown algorithm 'nope'"),
        (("datasets", "generate", "moon", "random"), "unknown task 'moon'"),
        (("datasets", "generate", "hopper", "medium"), "behaviour-policy zoo"),
        (("datasets", "info", "hopper-florp"), "not a dataset name"),
        (("train", "bc", "--dataset", "hopper-random", "--seeds", "a,b"), "--seeds a,b"),
        (("evaluate", str(tmp_path)), "not a run directory"),
        (("train", "bc", "--dataset", str(small), "--env", "hopper"), "task hopper expects 11 and 3"),
    ]
    for args, expected in cases:
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2 and expected in err and err.strip().count("\n") == 0, (args, err)


def test_train_evaluate_plot(tmp_path, monkeypatch, capsys):
    data = tmp_path / "ip.hdf5"
    assert run_cli(monkeypatch, capsys, "datasets", "generate", "inverted-pendulum", "expert-demos",
                   "--episodes", "2", "--out", str(data))[0] == 0
    run = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "train", "bc", "--dataset", str(data), "--steps", "200",
                           "--seeds", "0,1", "--out", str(run), "--log-every", "100", "--eval-every", "200",
                           "--eval-episodes", "1", "--set", "policy.hidden_dims=32,32", "--set", "policy.lr=1e-3",
                           "--quiet")
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["algorithm"] == "bc" and config["config"]["policy"]["hidden_dims"] == [32, 32]
    assert config["config"]["policy"]["lr"] == 1e-3 and config["seeds"] == [0, 1] and len(config["dataset"]["hash"]) == 64
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {(x["step"], x["seed"]) for x in lines} == {(100, 0), (100, 1), (200, 0), (200, 1)}
    assert all("eval/return" in x for x in lines if x["step"] == 200)
    assert list((run / "checkpoints").glob("*.msgpack"))

    code, out, err = run_cli(monkeypatch, capsys, "evaluate", str(run), "--sweep", "gravity,damping",
                             "--episodes", "3", "--quiet")
    assert code == 0, err
    result = json.loads((run / "eval.json").read_text())
    assert result["env"] == "inverted-pendulum" and result["episodes"] == 3
    for key in ("return_mean", "return_std", "normalized_mean", "per_seed"):
        assert key in result["nominal"]
    assert len(result["nominal"]["per_seed"]) == 2
    assert set(result["sweeps"]) == {"gravity", "damping"}
    assert all({"value", "return_mean", "normalized_mean", "per_seed"} <= set(p) for p in result["sweeps"]["gravity"])
    assert "gravity" in out and "nominal" in out

    code, out, err = run_cli(monkeypatch, capsys, "ope", str(run), "--dataset", str(data), "--steps", "200",
                             "--gamma", "0.9", "--rollouts", "1")
    assert code == 0, err
    assert "DualDICE value (gamma 0.9)" in out and "Monte-Carlo over 1 episodes" in out
    code, _, err = run_cli(monkeypatch, capsys, "ope", str(run), "--dataset", str(data), "--seed-index", "2")
    assert code == 2 and "--seed-index 2: the run has 2 seeds" in err

    png = tmp_path / "curves.png"
    assert run_cli(monkeypatch, capsys, "plot", str(run), "--out", str(png))[0] == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_texts(monkeypatch, capsys):
    for args in (["--help"], ["train", "--help"], ["datasets", "generate", "--help"], ["evaluate", "--help"]):
        code, out, _ = run_cli(monkeypatch, capsys, *args)
        assert code == 0 and "Usage" in out


def test_benchmark_help_keeps_install_extras_visible_and_names_every_ablation_profile(monkeypatch, capsys):
    # Rich markup would swallow an unescaped "[ray]", telling users to install the wrong thing; a profile the
    # help does not name is one users cannot find
    from drorl.benchmarks import model_based, ovr, robust_il, safety, stackelberg

    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = run_cli(monkeypatch, capsys, "benchmark", "--help")
    assert code == 0 and "drorl[ray]" in out
    listed = " ".join(out.split()).replace("│", "")
    for suite in (robust_il, ovr, model_based, safety, stackelberg):
        for name in set(suite.PROFILES) - {"smoke", "quick", "full", "quickstart"}:
            assert name in listed, (suite.__name__, name)
