"""``--logger``: the TensorBoard and W&B (offline) sinks write what metrics.jsonl holds, read back by each
tool's own reader; skipped when the extra is not installed."""

import importlib.util
import json
import sys

import pytest

from drorl.errors import DrorlError
from drorl.loggers import TensorBoardSink, parse_loggers

INSTALLED = [name for name, module in (("tensorboard", "tensorboardX"), ("wandb", "wandb"))
             if importlib.util.find_spec(module) is not None]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A 2-seed BC run of 4 steps (2 per call) logged to every installed sink, and its metrics.jsonl lines."""
    import os

    from conftest import make_arrays

    from drorl.data.dataset import Dataset
    from drorl.train import RunSettings, train

    os.environ.setdefault("WANDB_SILENT", "true")
    dataset = Dataset.from_arrays(make_arrays(), metadata={"env": "inverted-pendulum", "kind": "synthetic"})
    run_dir = tmp_path_factory.mktemp("logged") / "run"
    train("bc", dataset, run_dir, RunSettings(steps=4, seeds=(0, 1), updates_per_call=2), progress=False,
          loggers=("jsonl", *INSTALLED))
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return run_dir, lines


def jsonl_series(lines, seed, metric):
    return [(line["step"], line[metric]) for line in lines if line["seed"] == seed]


def test_logger_names_are_checked():
    assert parse_loggers("jsonl, tensorboard,wandb,jsonl") == ("jsonl", "tensorboard", "wandb")
    with pytest.raises(DrorlError, match="--logger mlflow: expected some of jsonl, tensorboard, wandb"):
        parse_loggers("jsonl,mlflow")


def test_a_missing_extra_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if not installed
    with pytest.raises(DrorlError, match=r"pip install 'drorl\[tensorboard\]'"):
        TensorBoardSink(tmp_path, [0], 0)


def test_tensorboard_events_load_back(logged_run):
    pytest.importorskip("tensorboardX",
                        reason="the tensorboard extra is not installed (pip install 'drorl[tensorboard]')")
    accumulator_module = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                             reason="TensorBoard's reader is not installed (pip install tensorboard)")
    run_dir, lines = logged_run
    metric = next(k for k in lines[0] if k not in ("step", "seed", "seconds"))
    for seed in (0, 1):
        events = accumulator_module.EventAccumulator(str(run_dir / "tensorboard" / f"seed_{seed}")).Reload()
        loaded = [(e.step, e.value) for e in events.Scalars(metric)]
        expected = jsonl_series(lines, seed, metric)
        assert [s for s, _ in loaded] == [s for s, _ in expected] == [2, 4]
        assert [v for _, v in loaded] == pytest.approx([v for _, v in expected], rel=1e-6)


def wandb_records(path):
    """The records of a .wandb file, decoded with W&B's own record schema (wandb.proto): a 7-byte header
    (":W&B", magic, version), then LevelDB-log framing (32 KiB blocks; chunks of checksum, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, payload, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        if kind == 0:
            break
        payload += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            records.append(record)
            payload = b""
    return records


def test_wandb_offline_run_loads_back(logged_run):
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install 'drorl[wandb]')")
    run_dir, lines = logged_run
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    history = {}
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in record.history.item}
            for key, value in items.items():
                history.setdefault(key, []).append((items["_step"], value))
    metric = next(k for k in lines[0] if k not in ("step", "seed", "seconds"))
    for seed in (0, 1):
        assert history[f"seed_{seed}/{metric}"] == jsonl_series(lines, seed, metric)
