"""docs/architecture.md's worked example, executed: the one-file algorithm plus its registry line
trains through the loop and keeps the contract."""

import re
import sys
from pathlib import Path

import numpy as np

from drorl import algos
from drorl.algos import REGISTRY, Entry
from drorl.data.dataset import Dataset
from drorl.train import RunSettings, train

from conftest import make_arrays
from contract import check_contract

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_worked_example_trains_and_keeps_the_contract(tmp_path, monkeypatch):
    section = DOC.read_text().split("## Adding an algorithm", 1)[1]
    source = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    registry_line = re.search(r'^"rwbc": (Entry\(.*\)),$', section, re.M).group(1)
    (tmp_path / "rwbc_example.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = eval(registry_line.replace("drorl.algos.rwbc", "rwbc_example"), {"Entry": Entry})  # the doc's own line
    monkeypatch.setitem(REGISTRY, "rwbc", entry)
    try:
        module = algos.get("rwbc", "offline")
        check_contract(module, entry, tmp_path=tmp_path / "contract")
        arrays = make_arrays(n=600, obs_dim=4, act_dim=2)
        dataset = Dataset.from_arrays(arrays)
        config = module.Config(policy=module.bc.PolicyConfig(hidden_dims=(16,)), beta=0.5)
        states, run = train("rwbc", dataset, tmp_path / "run", RunSettings(steps=200, seeds=(0,), updates_per_call=100),
                            config=config, progress=False)
        assert (run / "checkpoints").is_dir() and len((run / "metrics.jsonl").read_text().splitlines()) == 2
        weights = np.asarray(module.reward_weights(np.array([0.0, 1.0, 2.0], np.float32), 1.0))
        np.testing.assert_allclose(weights.mean(), 1.0, rtol=1e-6)
        assert abs(weights[2] / weights[1] - np.e) < 1e-5  # exp(r / beta) between rewards 1 apart
    finally:
        sys.modules.pop("rwbc_example", None)
