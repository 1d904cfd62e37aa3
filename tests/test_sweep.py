"""``drorl sweep``: the config, the grid, resuming a killed sweep (acceptance 2) and the Ray backend
(acceptance 1), on a tiny dataset of the small task."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from drorl.errors import DrorlError
from drorl.sweep import expand_cells, parse_sweep_config, sweep


@pytest.fixture
def dataset_file(tmp_path):
    from conftest import make_arrays

    from drorl.data.dataset import Dataset
    from drorl.data.hdf5 import write_hdf5

    metadata = {"env": "inverted-pendulum", "kind": "synthetic", "ref_min_score": 0.0, "ref_max_score": 1000.0}
    return write_hdf5(Dataset.from_arrays(make_arrays(), metadata=metadata), tmp_path / "tiny.hdf5")


def write_config(path: Path, **entries) -> Path:
    path.write_text(yaml.safe_dump(entries))
    return path


def test_config_errors_name_the_key():
    good = {"algorithms": ["bc"], "datasets": ["hopper-medium"], "steps": 10}
    assert parse_sweep_config(good).seeds == (0,)
    for bad, message in (({**good, "seed": [1]}, "unknown key 'seed'"),
                         ({**good, "steps": 0}, "steps: expected a positive integer"),
                         ({**good, "algorithms": []}, "algorithms: expected a list"),
                         ({**good, "algorithms": [{"label": "x"}]}, "algorithms: expected a name or a mapping"),
                         ({**good, "seeds": [1, 1]}, "seeds: expected a list of distinct integers"),
                         ({**good, "set": {"policy.lr": []}}, "set: policy.lr: expected at least one value"),
                         ({**good, "set": {"policy.hidden_dims": [64, 64]}}, "policy.hidden_dims: a value is repeated"),
                         ({**good, "env": 3}, "env: expected a task's name")):
        with pytest.raises(DrorlError, match=message):
            parse_sweep_config(bad, "cfg.yaml")


def test_cells_cover_the_grid(tmp_path):
    config = parse_sweep_config({"algorithms": ["bc", {"name": "drbc", "label": "DR-BC", "set": {"rho": 0.2}}],
                                 "datasets": ["a", "b"], "set": {"policy.lr": [0.1, 0.01]}, "seeds": [0, 1, 2],
                                 "steps": 5})
    cells = expand_cells(config, {"a": ("a", "/a.hdf5"), "b": ("b", "/b.hdf5")}, tmp_path)
    assert len(cells) == 2 * 2 * 2 * 3
    drbc = [c for c in cells if c["algorithm"] == "drbc" and c["dataset"] == "b" and c["seeds"] == [2]]
    assert [c["label"] for c in drbc] == ["DR-BC policy.lr=0.1", "DR-BC policy.lr=0.01"]
    assert drbc[0]["overrides"] == {"rho": 0.2, "policy.lr": 0.1}
    assert drbc[0]["run_dir"] == str(tmp_path / "b" / "DR-BC_policy.lr=0.1" / "seed2")
    vmapped = expand_cells(parse_sweep_config({"algorithms": ["bc"], "datasets": ["a"], "seeds": [0, 1], "steps": 5,
                                               "vmap_seeds": True}), {"a": ("a", "/a.hdf5")}, tmp_path)
    assert [c["seeds"] for c in vmapped] == [[0, 1]] and vmapped[0]["run_dir"].endswith("seeds0-1")


def drorl_sweep(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    """``drorl sweep`` in its own process group (so that killing it kills its workers too); the CLI keeps
    JAX's compilation cache in $DRORL_DATA, so a second sweep reuses the first one's programs."""
    return subprocess.Popen([sys.executable, "-m", "drorl.cli", "sweep", str(config), "--out", str(out), "--quiet",
                             *extra], env={**os.environ, "JAX_PLATFORMS": "cpu"}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_sweep_reruns_only_the_missing_cells(tmp_path, dataset_file):
    config = write_config(tmp_path / "kill.yaml", algorithms=["bc"], datasets=[str(dataset_file)], seeds=[0, 1, 2],
                          steps=10, episodes=1)
    out = tmp_path / "out"
    process = drorl_sweep(config, out, "--workers", "1")
    deadline = time.monotonic() + 300
    while not list(out.glob("*/*/*/eval.json")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    _, stderr = process.communicate()
    finished = {p.parent for p in out.glob("*/*/*/eval.json")}
    assert 1 <= len(finished) < 3, stderr[-2000:]
    stamps = {d: (d / "eval.json").stat().st_mtime_ns for d in finished}

    rerun = drorl_sweep(config, out, "--workers", "1")
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr[-2000:]
    assert f"{3 - len(finished)} runs trained, {len(finished)} already done" in stdout
    assert all((d / "eval.json").stat().st_mtime_ns == t for d, t in stamps.items())
    assert len(list(out.glob("*/*/*/eval.json"))) == 3 and "| bc | 3 x 1 |" in (out / "report.md").read_text()
    again = sweep(config, out, progress=False)  # nothing left to run: no worker starts
    assert again.ran == [] and len(again.skipped) == 3


def test_ray_backend_gathers_the_local_report(tmp_path, dataset_file, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'drorl[ray]')")
    # the local pool compiles into this cache and the Ray workers (same flags, same programs) read it back
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax-cache"))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    config = write_config(tmp_path / "two.yaml", algorithms=["bc", "drbc"], datasets=[str(dataset_file)],
                          seeds=[0, 1], steps=10, episodes=1)
    # one worker and one Ray CPU: each algorithm compiles once, the other seed and Ray hit the cache
    local = sweep(config, tmp_path / "local", workers=1, progress=False)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        remote = sweep(config, tmp_path / "ray", backend="ray", progress=False)
    finally:
        ray.shutdown()
    assert len(remote.ran) == 4 and remote.report.read_text() == local.report.read_text()
    assert "| bc | 2 x 1 |" in local.report.read_text() and "| drbc | 2 x 1 |" in local.report.read_text()


def test_fields_are_checked_and_typed_before_any_cell_runs():
    from drorl.sweep import typed_overrides

    # YAML reads 3e-4 as a string and a tuple field as a list: both become the field's type
    assert typed_overrides("bc", {"policy.lr": "3e-4", "policy.hidden_dims": [8, 8]}, "s.yaml") == \
        {"policy.lr": 3e-4, "policy.hidden_dims": (8, 8)}
    with pytest.raises(DrorlError, match="s.yaml: bc: --set policy.nope: unknown option"):
        typed_overrides("bc", {"policy.nope": 1}, "s.yaml")
    with pytest.raises(DrorlError, match="s.yaml: bcc: "):
        typed_overrides("bcc", {}, "s.yaml")
