"""Resume under faults (issue 23, acceptance check 4): a kill during a checkpoint write, during evaluation
and during a benchmark's report writing leaves a state from which the same command finishes with the
same result.

A kill is simulated in-process, deterministically: the writer (or evaluator) leaves what a killed process
leaves (a half-written temporary file beside its target, no rename) and raises ``Killed``, which no
``except Exception`` in drorl can swallow; then the same call runs again unpatched.
"""

import json
import shutil

import jax
import numpy as np
import pytest

from drorl.algos import bc
from drorl.train import RunSettings, train

CONFIG = bc.Config(policy=bc.PolicyConfig(hidden_dims=(8,)))
SETTINGS = RunSettings(steps=300, seeds=(0, 1), updates_per_call=100, checkpoint_every=100, eval_every=100)
PROBE = np.random.default_rng(0).normal(size=(2, 8, 4)).astype(np.float32)


class Killed(BaseException):
    """What SIGKILL does to a Python program, minus the process: nothing after it runs."""


def leave_partial_file(path, data: bytes) -> None:
    """What a process killed inside ``drorl.io_utils.atomic_path`` leaves: half its temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / f".{path.name}.killed.tmp").write_bytes(data[:len(data) // 2])


def killed_on_call(number, function, before_dying=lambda *args: None):
    """``function``, except that its ``number``-th call runs ``before_dying(*args)`` and raises Killed."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(None)
        if len(calls) == number:
            before_dying(*args)
            raise Killed()
        return function(*args, **kwargs)

    return wrapped


def probe_evaluator(policy, num_policies):
    """A deterministic stand-in for episodes: the policies' mean action on fixed observations."""
    return {"eval/probe": policy(PROBE[:num_policies]).mean(axis=(1, 2))}


def train_run(out, dataset):
    return train("bc", dataset, out, SETTINGS, config=CONFIG, evaluator=probe_evaluator, progress=False)[0]


def metric_records(run):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: final states, metrics and checkpoint bytes."""
    import conftest

    from drorl.data.dataset import Dataset

    dataset = Dataset.from_arrays(conftest.make_arrays(), metadata={"env": "inverted-pendulum"})
    run = tmp_path_factory.mktemp("reference")
    states = train_run(run, dataset)
    return dataset, states, metric_records(run), (run / "checkpoints" / "step_000000300.msgpack").read_bytes()


def assert_same_as_reference(run, states, reference):
    _, ref_states, ref_metrics, ref_checkpoint = reference
    for a, b in zip(jax.tree_util.tree_leaves(states), jax.tree_util.tree_leaves(ref_states), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert metric_records(run) == ref_metrics
    assert (run / "checkpoints" / "step_000000300.msgpack").read_bytes() == ref_checkpoint


def test_kill_during_a_checkpoint_write_then_the_same_command_finishes_the_same(tmp_path, monkeypatch, reference):
    from drorl import checkpoint

    dataset = reference[0]
    run = tmp_path / "run"
    with monkeypatch.context() as patch:  # the second checkpoint (step 200) dies half-written
        patch.setattr(checkpoint, "write_bytes_atomic",
                      killed_on_call(2, checkpoint.write_bytes_atomic, leave_partial_file))
        with pytest.raises(Killed):
            train_run(run, dataset)
    assert [p.name for p in checkpoint.list_checkpoints(run / "checkpoints")] == ["step_000000100.msgpack"]
    assert (run / "checkpoints" / ".step_000000200.msgpack.killed.tmp").is_file()
    assert_same_as_reference(run, train_run(run, dataset), reference)


def test_kill_during_evaluation_then_the_same_command_finishes_the_same(tmp_path, reference):
    dataset = reference[0]
    run = tmp_path / "run"
    with pytest.raises(Killed):
        train("bc", dataset, run, SETTINGS, config=CONFIG, evaluator=killed_on_call(2, probe_evaluator),
              progress=False)
    assert max(r["step"] for r in metric_records(run)) == 100  # the chunk being evaluated was not logged
    assert_same_as_reference(run, train_run(run, dataset), reference)


def finished_benchmark_runs(out):
    """The run directories of robust-il's smoke profile as a finished benchmark leaves them (eval.json),
    with made-up scores: the report is all that remains to write."""
    from drorl.benchmarks.robust_il import PROFILES
    from drorl.io_utils import write_json_atomic

    profile = PROFILES["smoke"]
    for i, (label, algorithm, _) in enumerate(profile.variants):
        def point(value, shift):
            per_seed = [100.0 + 10 * i + shift + seed for seed in profile.seeds]
            return {"value": value, "return_mean": float(np.mean(per_seed)), "return_std": 1.0,
                    "normalized_mean": float(np.mean(per_seed)), "per_seed": per_seed}

        result = {"env": "inverted-pendulum", "episodes": profile.episodes,
                  "reference": {"min": 0.0, "max": 1000.0, "source": "made up"}, "nominal": point(None, 0.0),
                  "sweeps": {f: [point(v, -v) for v in (0.5, 1.0, 1.5)] for f in profile.families},
                  "summary": {}, "algorithm": algorithm, "label": label, "seeds": list(profile.seeds)}
        write_json_atomic(out / "inverted-pendulum" / label.replace(" ", "_").replace("=", "") / "eval.json",
                          result)


def benchmark_outputs(out):
    return {name: (out / name).read_bytes() for name in ("report.md", "results.json")}


@pytest.fixture(scope="module")
def benchmark_reference(tmp_path_factory):
    from drorl.benchmarks.robust_il import run

    out = tmp_path_factory.mktemp("bench")
    finished_benchmark_runs(out)
    run("smoke", out)
    return out, benchmark_outputs(out)


@pytest.mark.parametrize("writer", ["write_bytes_atomic", "write_json_atomic", "plot_robustness"])
def test_kill_during_a_benchmark_report_then_the_same_command_finishes_the_same(tmp_path, monkeypatch, writer,
                                                                                benchmark_reference):
    from drorl.benchmarks import robust_il

    reference_out, expected = benchmark_reference
    out = tmp_path / "bench"
    shutil.copytree(reference_out / "inverted-pendulum", out / "inverted-pendulum")
    shutil.copytree(reference_out / "data", out / "data")  # the smoke profile's demonstrations
    dying = {"write_bytes_atomic": lambda path, data: leave_partial_file(path, data),
             "write_json_atomic": lambda path, obj: leave_partial_file(path, json.dumps(obj).encode()),
             "plot_robustness": lambda runs, path, **_: leave_partial_file(path, b"\x89PNG" * 100)}[writer]
    with monkeypatch.context() as patch:
        patch.setattr(robust_il, writer, killed_on_call(1, getattr(robust_il, writer), dying))
        with pytest.raises(Killed):
            robust_il.run("smoke", out)
    assert not (out / "results.json").exists()
    assert (out / "report.md").exists() == (writer == "write_json_atomic")  # report.md is written first
    robust_il.run("smoke", out)
    assert benchmark_outputs(out) == expected
    assert (out / "inverted-pendulum.png").read_bytes()[:4] == b"\x89PNG"
