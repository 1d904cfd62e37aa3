"""The training health monitor: NaN/inf stops a run at its chunk and keeps the last good checkpoint;
declared diagnostics drifting without bound are warned about (acceptance checks 2 and 3 of issue 23)."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drorl import checkpoint, cli, health
from drorl.algos import bc, be_droil
from drorl.data.hdf5 import write_hdf5
from drorl.errors import DrorlError
from drorl.train import RunSettings, train

CONFIG = bc.Config(policy=bc.PolicyConfig(hidden_dims=(8,)))
SETTINGS = RunSettings(steps=300, seeds=(0, 1), updates_per_call=100, checkpoint_every=100)
BAD_STEP = 250  # inside the third chunk, steps 201-300


def poisoned(update, what):
    """BC's update with its loss metric turned to NaN from step BAD_STEP on (``what="metric"``), or its
    policy parameters turned to inf after the chunk's last update (``"parameter"``: metrics stay finite)."""

    def bad_update(state, batch, key):
        new, metrics = update(state, batch, key)
        if what == "metric":
            return new, {**metrics, "loss": jnp.where(new.step >= BAD_STEP, jnp.nan, metrics["loss"])}
        params = jax.tree_util.tree_map(lambda p: jnp.where(new.step == 300, jnp.inf, p), new.policy.params)
        return new.replace(policy=new.policy.replace(params=params)), metrics

    return bad_update


def test_nan_stops_at_its_chunk_and_the_last_good_checkpoint_resumes(tmp_path, small_dataset, monkeypatch):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(bc, "update", poisoned(bc.update, "metric"))
        with pytest.raises(DrorlError) as info:
            train("bc", small_dataset, run, SETTINGS, config=CONFIG, progress=False)
    assert str(info.value) == ("training diverged: metric 'loss' is nan in steps 201-300, seed 0; stopped before "
                               f"checkpointing; the last good checkpoint is {run / 'checkpoints' / 'step_000000200.msgpack'}")
    assert checkpoint.latest(run / "checkpoints").name == "step_000000200.msgpack"
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in logged) == 200 and all(np.isfinite(r["loss"]) for r in logged)

    resumed, _ = train("bc", small_dataset, run, SETTINGS, config=CONFIG, progress=False)
    reference, _ = train("bc", small_dataset, tmp_path / "reference", SETTINGS, config=CONFIG, progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(reference), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_non_finite_parameter_is_named(tmp_path, small_dataset, monkeypatch):
    monkeypatch.setattr(bc, "update", poisoned(bc.update, "parameter"))
    with pytest.raises(DrorlError, match=r"^training diverged: parameter \.policy\.params\['params'\]\['MLP_0'\]\['Dense_0'\]"
                                         r"\['bias'\] holds NaN or inf after steps 201-300; stopped before checkpointing"):
        train("bc", small_dataset, tmp_path / "run", SETTINGS, config=CONFIG, progress=False)
    assert checkpoint.latest(tmp_path / "run" / "checkpoints").name == "step_000000200.msgpack"


def test_the_named_parameter_is_the_first_bad_float_leaf_with_integer_leaves_skipped():
    tree = {"a_step": jnp.array(3), "b": jnp.ones(2), "c": jnp.array([1.0, jnp.nan]), "d": jnp.full(3, jnp.inf)}
    assert health.non_finite_parameter(tree) == "['c']"
    assert health.non_finite_parameter({"a_step": jnp.array(3), "b": jnp.ones(2)}) is None
    assert health.non_finite_parameter({"a_step": jnp.array(3)}) is None


def test_nan_through_the_cli_is_one_line_and_exit_code_2(tmp_path, small_dataset, monkeypatch, capsys):
    data = write_hdf5(small_dataset, tmp_path / "d.hdf5")
    monkeypatch.setattr(bc, "update", poisoned(bc.update, "metric"))
    monkeypatch.setattr(sys, "argv", ["drorl", "train", "bc", "--dataset", str(data), "--steps", "300",
                                      "--log-every", "100", "--checkpoint-every", "100", "--quiet",
                                      "--out", str(tmp_path / "run"), "--set", "policy.hidden_dims=8"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("drorl: training diverged: metric 'loss' is nan in steps 201-300, seed 0")


def replay(records, watch):
    """Feed logged chunks to the monitor one at a time, as the loop does; the warnings it raises."""
    monitor, raised = health.Monitor(watch), []
    for step in sorted({r["step"] for r in records}):
        raised += monitor.add([r for r in records if r["step"] == step])
    return raised


def chunks(series_of_seed, num_chunks=100, per_chunk=1000, seeds=(0, 1, 2)):
    return [{"step": (i + 1) * per_chunk, "seed": seed, **series_of_seed(seed, i)}
            for i in range(num_chunks) for seed in seeds]


def test_runaway_dual_raises_the_warning_once_per_metric_and_seed():
    """The full profile's runaway: tau 1 -> 42 and Q at initial states 0 -> -1,800 over 100k steps."""
    noise = np.random.default_rng(0)

    def runaway(seed, i):
        return {"tau": 1 + 0.41 * i + noise.normal(0, 0.3), "q_initial": -18.0 * i + noise.normal(0, 20),
                "effective_sample_fraction": 0.8 + noise.normal(0, 0.02), "bc_loss": 1.0}

    raised = replay(chunks(runaway), be_droil.DIAGNOSTICS)
    assert sorted((w["metric"], w["seed"]) for w in raised) == [(m, s) for m in ("q_initial", "tau")
                                                                for s in (0, 1, 2)]
    assert all(w["step"] <= 40_000 for w in raised)  # caught early, not at the end of the run
    tau = next(w for w in raised if w["metric"] == "tau")
    assert tau["slope_per_step"] == pytest.approx(0.41 / 1000, rel=0.3)
    text = health.describe(tau)
    assert text.startswith("warning: tau (seed ") and "drifts without levelling off" in text and "\n" not in text


@pytest.mark.parametrize("shape", ["flat", "converging", "heavy-noise"])
def test_a_converged_run_raises_no_warning(shape):
    noise = np.random.default_rng(1)

    def converged(seed, i):
        if shape == "flat":
            tau, q = 2.0 + noise.normal(0, 0.1), -50 + noise.normal(0, 5)
        elif shape == "converging":  # leaves its initial value fast, then settles
            tau, q = 3 - 2 * np.exp(-i / 8) + noise.normal(0, 0.05), -60 * (1 - np.exp(-i / 10)) + noise.normal(0, 2)
        else:  # noise as large as the level, around zero
            tau, q = 0.1 + noise.normal(0, 0.5), noise.normal(0, 30)
        return {"tau": tau, "q_initial": q, "effective_sample_fraction": 0.7 + noise.normal(0, 0.05)}

    assert replay(chunks(converged, seeds=tuple(range(5))), be_droil.DIAGNOSTICS) == []


def test_short_histories_and_constant_series_are_never_flagged():
    steps = np.arange(1, 101) * 100
    assert health.drift(steps[:health.MIN_CHUNKS - 1], steps[:health.MIN_CHUNKS - 1] * 1.0) is None
    assert health.drift(steps, np.full(100, 3.0)) is None
    assert health.drift(steps, steps * 0.01) is not None  # an exact line from 0


def test_a_drifting_run_warns_in_metrics_jsonl_and_in_the_benchmark_report(tmp_path, small_dataset, monkeypatch,
                                                                          capsys):
    """A real (tiny) loop whose declared diagnostic drifts: BC with a fake metric growing with the step."""
    monkeypatch.setattr(bc, "DIAGNOSTICS", {"growing": "a test metric"}, raising=False)
    update = bc.update
    monkeypatch.setattr(bc, "update", lambda state, batch, key: (
        lambda out: (out[0], {**out[1], "growing": out[0].step.astype(jnp.float32)}))(update(state, batch, key)))
    settings = RunSettings(steps=200, seeds=(0,), updates_per_call=10, checkpoint_every=200)
    train("bc", small_dataset, tmp_path / "run", settings, config=CONFIG, progress=False)
    records = health.read_records(tmp_path / "run" / "metrics.jsonl")
    warnings = [r for r in records if health.is_warning(r)]
    assert [(w["metric"], w["seed"], w["step"]) for w in warnings] == [("growing", 0, 200)]
    assert "drorl: warning: growing (seed 0) drifts" in capsys.readouterr().err
    lines = health.report_lines([("hopper BE-DROIL", tmp_path / "run")])
    assert lines[0] == "## Training health" and any(x.startswith("- hopper BE-DROIL: warning: growing") for x in lines)
    assert health.report_lines([("clean", tmp_path / "nowhere")]) == []


def test_drorl_report_lists_the_warnings_of_its_runs(tmp_path):
    from test_run_report import make_run

    from drorl.run_report import write_run_report

    steps = np.arange(1, 41) * 100
    records = [{"step": int(s), "seed": 0, "tau": 1 + 0.01 * s} for s in steps]
    warning = replay(records, be_droil.DIAGNOSTICS)
    assert [w["metric"] for w in warning] == ["tau"]
    drifting = make_run(tmp_path / "drifting", "be-droil", "hopper", "hopper-expert-demos", [50.0, 60.0])
    (drifting / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records + warning))
    calm = make_run(tmp_path / "calm", "bc", "hopper", "hopper-expert-demos", [40.0, 45.0])
    text = write_run_report([drifting, calm], tmp_path / "report").read_text()
    assert "## Training health" in text and f"- {drifting} (be-droil on hopper / hopper-expert-demos): warning: tau " \
                                          "(seed 0) drifts without levelling off" in text
    assert f"- {calm}" not in text


def test_learning_curves_leave_warning_records_out(tmp_path):
    from drorl.plot import plot_runs

    records = [{"step": 100 * (i + 1), "seed": 0, "tau": 1 + 0.5 * i} for i in range(40)]
    records += replay(records, be_droil.DIAGNOSTICS)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert plot_runs([tmp_path / "run"], tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_nan_stops_an_online_run_at_its_chunk_and_it_resumes_from_the_last_good_checkpoint(tmp_path, monkeypatch):
    from drorl.algos import sac
    from drorl.online import OnlineSettings, train_online

    settings = OnlineSettings(env_steps=300, start_steps=100, update_every=50, buffer_size=1000, eval_every=0,
                              checkpoint_every=100)
    config = sac.Config(hidden_dims=(8, 8), batch_size=16)
    run = tmp_path / "run"
    update = sac.update

    def bad_update(state, batch, key):  # NaN from the 151st update on: updates start at env step 100, 50 per
        # chunk, so the 151st is in the chunk at env steps 201-250
        new, metrics = update(state, batch, key)
        return new, {**metrics, "critic_loss": jnp.where(new.step >= 151, jnp.nan, metrics["critic_loss"])}

    with monkeypatch.context() as patch:
        patch.setattr(sac, "update", bad_update)
        with pytest.raises(DrorlError) as info:
            train_online("sac", "inverted-pendulum", run, settings, config=config, progress=False)
    kept = run / "checkpoints" / "step_000000200.msgpack"
    assert str(info.value) == ("training diverged: metric 'critic_loss' is nan in steps 201-250; stopped before "
                               f"checkpointing; the last good checkpoint is {kept}")
    assert checkpoint.latest(run / "checkpoints") == kept
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [50, 100, 150, 200]

    state, _ = train_online("sac", "inverted-pendulum", run, settings, config=config, progress=False)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [50, 100, 150, 200, 250, 300]
    assert all(np.isfinite(r["critic_loss"]) for r in logged if "critic_loss" in r)
    assert int(state.step) == 250  # 50 updates at each of env steps 100, 150, ..., 300: none lost or repeated
