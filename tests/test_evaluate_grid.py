"""User-chosen perturbation grids (``drorl evaluate --sweep FAMILY=LO:HI:N``, ``--grid2d``) and the Python
API (``drorl.train``, ``drorl.evaluate``, ``drorl.sweep``, ``drorl.report``) against the command line (issue
22), on a BC run of a few steps on a tiny dataset of the small task, one episode per grid value."""

import inspect
import json
import shutil

import matplotlib.image
import numpy as np
import pytest
import yaml

import drorl
from cli_helpers import run_cli
from drorl import cli
from drorl.envs import CombinedPerturbation, Perturbation, default_grid, make_env, parse_sweep
from drorl.envs.batched import BatchedMujocoEnvs
from drorl.errors import DrorlError

TRAIN_ARGS = {"steps": 20, "log_every": 10, "overrides": {"policy.hidden_dims": (16, 16)}}


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory):
    from conftest import make_arrays

    from drorl.data.dataset import Dataset
    from drorl.data.hdf5 import write_hdf5

    metadata = {"env": "inverted-pendulum", "kind": "synthetic", "ref_min_score": 0.0, "ref_max_score": 1000.0}
    return write_hdf5(Dataset.from_arrays(make_arrays(), metadata=metadata),
                      tmp_path_factory.mktemp("data") / "tiny.hdf5")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, dataset_file):
    """A BC run of 20 steps, trained once through the Python API; tests evaluate copies of it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRORL_DATA", str(tmp_path_factory.mktemp("drorl-data")))
        return drorl.train("bc", str(dataset_file), out=tmp_path_factory.mktemp("runs") / "bc", progress=False,
                           **TRAIN_ARGS)


@pytest.fixture
def run_dir(trained_run, tmp_path):
    return shutil.copytree(trained_run, tmp_path / "run")


@pytest.fixture
def applied(monkeypatch):
    """The perturbations the evaluation gives the env slots, in slot order (nominal and idle slots left out)."""
    recorded = []
    original = BatchedMujocoEnvs.set_perturbations

    def recording(self, perturbations):
        recorded.extend(p for p in perturbations if p is not None)
        return original(self, perturbations)

    monkeypatch.setattr(BatchedMujocoEnvs, "set_perturbations", recording)
    return recorded


def test_explicit_range_evaluates_exactly_those_values(monkeypatch, capsys, run_dir, applied, tmp_path):
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", str(run_dir), "--sweep", "gravity=-0.3:0.3:7,damping",
                             "--episodes", "1", "--quiet")
    assert code == 0, err
    seven = [-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3]
    damping = default_grid("inverted-pendulum", "damping")  # a bare family keeps its built-in grid
    assert [(p.family, p.value) for p in applied] == [("gravity", v) for v in seven] + [("damping", v) for v in damping]
    result = json.loads((run_dir / "eval.json").read_text())
    assert [p["value"] for p in result["sweeps"]["gravity"]] == seven
    assert [p["value"] for p in result["sweeps"]["damping"]] == damping
    assert set(result["summary"]) == {"gravity", "damping"} and "grid2d" not in result
    assert "-0.3" in out and "gravity" in out
    png = tmp_path / "curves.png"
    assert run_cli(monkeypatch, capsys, "plot", str(run_dir), "--out", str(png))[0] == 0  # readers keep working
    assert matplotlib.image.imread(png).ndim == 3


def test_decreasing_range(run_dir, applied):
    result = drorl.evaluate(run_dir, "mass=0.2:-0.2:5", episodes=1, progress=False)
    assert [p.value for p in applied] == [0.2, 0.1, 0.0, -0.1, -0.2]
    assert [p["value"] for p in result["sweeps"]["mass"]] == [0.2, 0.1, 0.0, -0.1, -0.2]
    assert parse_sweep("actuator_range=3:1:3") == {"actuator_range": (3.0, 2.0, 1.0)}
    assert parse_sweep("gravity=0.1:0.1:1,damping") == {"gravity": (0.1,), "damping": None}


def test_grid2d_evaluates_the_product_and_writes_a_heat_map(monkeypatch, capsys, run_dir, applied):
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", str(run_dir), "--sweep",
                             "gravity=-0.3:0.3:5,damping=0:1:4", "--grid2d", "--episodes", "1", "--quiet")
    assert code == 0, err
    gravity, damping = [-0.3, -0.15, 0.0, 0.15, 0.3], [0.0, 1 / 3, 2 / 3, 1.0]
    assert all(isinstance(p, CombinedPerturbation) for p in applied)
    assert [[part.family for part in p.parts] for p in applied] == [["gravity", "damping"]] * 20
    np.testing.assert_allclose([[part.value for part in p.parts] for p in applied],
                               [[g, d] for g in gravity for d in damping])
    result = json.loads((run_dir / "eval.json").read_text())
    grid = result["grid2d"]
    assert grid["families"] == ["gravity", "damping"]
    np.testing.assert_allclose(grid["values"][0], gravity)
    np.testing.assert_allclose(grid["values"][1], damping)
    assert np.shape(grid["cells"]) == (5, 4) and result["sweeps"] == {}
    keys = {"return_mean", "return_std", "normalized_mean", "per_seed"}
    assert all(keys <= set(cell) for row in grid["cells"] for cell in row)
    heat_map = run_dir / "eval_grid2d.png"
    assert str(heat_map) in out.replace("\n", "")
    assert matplotlib.image.imread(heat_map).shape[2] in (3, 4)


def test_a_combined_perturbation_applies_both_families():
    both = CombinedPerturbation((Perturbation("gravity", 0.5), Perturbation("damping", 1.0)))
    env = make_env("inverted-pendulum", both)
    model, nominal = env.unwrapped.model, env.nominal
    try:
        assert model.opt.gravity[2] == pytest.approx(1.5 * nominal["opt.gravity"][2])
        assert model.dof_damping[1] == pytest.approx(2.0 * nominal["dof_damping"][1])
        env.set_perturbation(Perturbation("damping", 1.0))  # alone again: gravity back to nominal
        assert model.opt.gravity[2] == nominal["opt.gravity"][2]
    finally:
        env.close()
    with pytest.raises(DrorlError, match="distinct families"):
        CombinedPerturbation((Perturbation("gravity", 0.1), Perturbation("gravity", 0.2)))


@pytest.mark.parametrize("args, expected", [
    (["--sweep", "wind=0:1:3"], "--sweep wind=0:1:3: unknown perturbation family 'wind'"),
    (["--sweep", "gravity=0:1:0"], "--sweep gravity=0:1:0: N must be at least 1"),
    (["--sweep", "gravity=0:1:1"], "--sweep gravity=0:1:1: N must be at least 1 (exactly 1 only when LO equals HI)"),
    (["--sweep", "gravity=a:1:3"], "--sweep gravity=a:1:3: expected FAMILY=LO:HI:N"),
    (["--sweep", "gravity=0:1:2.5"], "--sweep gravity=0:1:2.5: expected FAMILY=LO:HI:N"),
    (["--sweep", "gravity=0:1"], "--sweep gravity=0:1: expected FAMILY=LO:HI:N"),
    (["--sweep", "gravity=-2:0:3"], "--sweep gravity=-2:0:3: perturbation gravity=-2.0: value must be"),
    (["--sweep", "gravity=0:1:3,gravity"], "gravity is given twice"),
    (["--sweep", "gravity", "--grid2d"], "--grid2d needs exactly two perturbation families in --sweep; got 1"),
    (["--sweep", "gravity,damping,mass", "--grid2d"], "--grid2d needs exactly two perturbation families"),
])
def test_bad_specs_are_refused_in_one_line(monkeypatch, capsys, run_dir, args, expected):
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(run_dir), *args, "--episodes", "1", "--quiet")
    assert code == 2 and err.startswith("drorl: ") and expected in err and err.strip().count("\n") == 0, err
    assert not (run_dir / "eval.json").exists()


def test_api_train_and_evaluate_write_what_the_cli_writes(monkeypatch, capsys, tmp_path, dataset_file, trained_run):
    cli_run = tmp_path / "cli-run"
    code, _, err = run_cli(monkeypatch, capsys, "train", "bc", "--dataset", str(dataset_file), "--out", str(cli_run),
                           "--steps", "20", "--log-every", "10", "--set", "policy.hidden_dims=16,16", "--quiet")
    assert code == 0, err
    assert json.loads((cli_run / "config.json").read_text()) == json.loads((trained_run / "config.json").read_text())
    [cli_lines, api_lines] = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
                               for line in (run / "metrics.jsonl").read_text().splitlines()]
                              for run in (cli_run, trained_run)]
    assert cli_lines == api_lines
    assert [p.read_bytes() for p in sorted((cli_run / "checkpoints").iterdir())] == [
        p.read_bytes() for p in sorted((trained_run / "checkpoints").iterdir())]

    spec = "gravity=0:0.2:2,damping=0:1:2"
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(cli_run), "--sweep", spec, "--grid2d",
                           "--episodes", "1", "--seed", "3", "--quiet")
    assert code == 0, err
    api_eval = tmp_path / "api" / "eval.json"
    result = drorl.evaluate(cli_run, spec, grid2d=True, episodes=1, seed=3, out=api_eval, progress=False)
    assert json.loads((cli_run / "eval.json").read_text()) == json.loads(api_eval.read_text()) == result
    assert (tmp_path / "api" / "eval_grid2d.png").is_file() and (cli_run / "eval_grid2d.png").is_file()


def test_api_sweep_and_report_write_what_the_cli_writes(monkeypatch, capsys, tmp_path, dataset_file):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"algorithms": ["bc"], "datasets": [str(dataset_file)], "seeds": [0],
                                      "steps": 10, "episodes": 1, "families": ["gravity=0:0.2:2"],
                                      "set": {"policy.hidden_dims": [[16, 16]]}}))
    swept = drorl.sweep(config, tmp_path / "api-sweep", workers=1, progress=False)
    code, _, err = run_cli(monkeypatch, capsys, "sweep", str(config), "--out", str(tmp_path / "cli-sweep"),
                           "--workers", "1", "--quiet")
    assert code == 0, err
    [api_eval] = (tmp_path / "api-sweep").rglob("eval.json")
    [cli_eval] = (tmp_path / "cli-sweep").rglob("eval.json")
    assert json.loads(api_eval.read_text()) == json.loads(cli_eval.read_text())
    assert [p["value"] for p in json.loads(api_eval.read_text())["sweeps"]["gravity"]] == [0.0, 0.2]
    assert swept.report.read_text() == (tmp_path / "cli-sweep" / "report.md").read_text().replace("cli-sweep",
                                                                                                  "api-sweep")

    report = drorl.report([tmp_path / "api-sweep"], tmp_path / "api-report")
    code, _, err = run_cli(monkeypatch, capsys, "report", str(tmp_path / "api-sweep"), "--out",
                           str(tmp_path / "cli-report"))
    assert code == 0, err
    assert report.read_text() == (tmp_path / "cli-report" / "report.md").read_text()
    assert (json.loads((tmp_path / "api-report" / "aggregates.json").read_text())
            == json.loads((tmp_path / "cli-report" / "aggregates.json").read_text()))


# a command's option -> (the function's parameter, the option's default as the function takes it)
TRANSLATED = {"quiet": ("progress", lambda quiet: not quiet), "seeds": ("seeds", cli._parse_seeds),
              "logger": ("loggers", str), "set_": ("overrides", lambda sets: cli._parse_sets(sets) or None)}


@pytest.mark.parametrize("command, name", [(cli.train_cmd, "train"), (cli.evaluate_cmd, "evaluate"),
                                           (cli.sweep_cmd, "sweep"), (cli.report_cmd, "report")])
def test_the_api_has_the_commands_defaults(command, name):
    function = getattr(drorl, name)
    api = {key: p.default for key, p in inspect.signature(function).parameters.items()
           if p.default is not inspect.Parameter.empty}
    options = {key: p.default.default for key, p in inspect.signature(command).parameters.items()
               if p.default.default is not ...}
    assert options, name
    for option, default in options.items():
        key, as_api = TRANSLATED.get(option, (option, lambda value: value))
        assert key in api, f"drorl {name} --{option} has no parameter in drorl.{name}"
        expected = as_api(default)
        assert (str(api[key]) == str(expected)) if "out" in key else api[key] == expected, (name, option)
