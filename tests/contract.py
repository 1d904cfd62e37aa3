"""The algorithm contract (docs/architecture.md), as checks any registered algorithm can be run through.

Used by tests/test_algorithm_contract.py over every registered algorithm, by the test of the test (a
dummy algorithm that ignores a config field), and by the architecture page's worked example.
"""

from __future__ import annotations

import dataclasses
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from drorl import checkpoint
from drorl.algos import Entry
from drorl.algos.base import Spec, config_fields, replace_config
from drorl.data.dataset import Dataset
from drorl.data.sampling import device_arrays
from drorl.envs import action_bounds, get_task
from drorl.train import init_states, make_train_chunk

from conftest import make_arrays

LOW, HIGH = np.array([-2.0, 0.5], np.float32), np.array([3.0, 1.5], np.float32)  # an asymmetric box
NUM_ACTIONS = 3

# dataclass machinery that touches every field without the algorithm reading it
_NOT_A_READ = {"__eq__", "__hash__", "__repr__", "__init__", "replace", "_replace", "asdict", "_asdict_inner",
               "astuple", "_astuple_inner", "fields", "__reduce__", "__getstate__", "__copy__", "__deepcopy__"}


def recording(config: Any, reads: set[str], prefix: str = "") -> Any:
    """A copy of ``config`` (and of the configs nested in it) that adds each field's dotted name to
    ``reads`` when code other than dataclass machinery reads it."""
    cls = type(config)
    names = {f.name for f in dataclasses.fields(cls)}

    def getattribute(self, name):
        if name in names and sys._getframe(1).f_code.co_name not in _NOT_A_READ:
            reads.add(prefix + name)
        return object.__getattribute__(self, name)

    recorder = type(f"Recording{cls.__name__}", (cls,), {"__getattribute__": getattribute,
                                                         "__module__": cls.__module__})
    values = {}
    for field in dataclasses.fields(cls):
        value = object.__getattribute__(config, field.name)
        values[field.name] = (recording(value, reads, f"{prefix}{field.name}.")
                              if dataclasses.is_dataclass(value) else value)
    return recorder(**values)


def tiny_config(config: Any) -> Any:
    """Small networks and batches, so that every algorithm's checks take seconds: every hidden layer 8
    wide (the depth kept, which other fields may be sized to) and every batch size 16."""
    overrides = {}
    for name in config_fields(type(config)):
        leaf = name.rsplit(".", 1)[-1]
        if leaf.endswith("hidden_dims"):
            value = config
            for part in name.split("."):
                value = getattr(value, part)
            overrides[name] = (8,) * len(value)
        elif leaf.endswith("batch_size"):
            overrides[name] = 16
    return replace_config(config, overrides)


def tiny_problem(entry: Entry) -> tuple[Dataset, Spec]:
    """A small dataset and spec for the entry's first action space, or its first task if it names tasks."""
    if entry.tasks:
        info = get_task(entry.tasks[0])
        low, high = action_bounds(info)
        arrays = make_arrays(n=160, obs_dim=info.obs_dim, act_dim=info.act_dim, episode_len=40)
        arrays["actions"] = low + (arrays["actions"] + 1.0) / 2.0 * (high - low)
        dataset = Dataset.from_arrays(arrays)
        return dataset, Spec.from_dataset(dataset, low, high, task=info.name)
    arrays = make_arrays(n=160, obs_dim=3, act_dim=2 if entry.action_spaces[0] == "continuous" else 1,
                         episode_len=40)
    if entry.action_spaces[0] == "continuous":
        arrays["actions"] = LOW + (arrays["actions"] + 1.0) / 2.0 * (HIGH - LOW)
        dataset = Dataset.from_arrays(arrays)
        return dataset, Spec.from_dataset(dataset, LOW, HIGH)
    arrays["actions"] = (np.arange(160) % NUM_ACTIONS).astype(np.float32)[:, None]
    dataset = Dataset.from_arrays(arrays)
    return dataset, Spec.from_dataset(dataset, np.zeros(1, np.float32), np.full(1, NUM_ACTIONS - 1.0, np.float32),
                                      num_actions=NUM_ACTIONS)


def trainable(module: ModuleType, entry: Entry, spec: Spec) -> Any:
    """What the loop trains: the module, or for an estimator its update for a uniformly random target
    policy (an estimator is fitted for some policy and does not act)."""
    if entry.kind != "estimator":
        return module

    def target_policy(obs, key):
        return jax.random.uniform(key, obs.shape[:-1] + (spec.act_dim,), minval=spec.action_low,
                                  maxval=spec.action_high)

    return SimpleNamespace(Config=module.Config, init=module.init,
                           update=lambda s, b, k: module.update_for_policy(s, b, k, target_policy))


def check_contract(module: ModuleType, entry: Entry, config: Any | None = None, tmp_path=None) -> None:
    """Every check of the contract; an AssertionError names the one that failed."""
    dataset, spec = tiny_problem(entry)
    reads: set[str] = set()
    config = recording(tiny_config(config if config is not None else module.Config()), reads)
    algo = trainable(module, entry, spec)
    if hasattr(module, "prepare"):  # what init needs from the whole dataset (a dynamics ensemble)
        spec = module.prepare(config, dataset, spec, tmp_path / "prepared", False)
    data = device_arrays(dataset)
    chunk = make_train_chunk(algo, 3)

    states, rngs = init_states(algo, config, spec, [0, 1])
    states, rngs, metrics = chunk(states, rngs, data)
    for name, value in metrics.items():
        assert np.shape(value) == (2,), f"metric {name} is not one scalar per seed: shape {np.shape(value)}"
        assert np.all(np.isfinite(np.asarray(value))), f"metric {name} is not finite"
    seeds_differ = any(not np.array_equal(np.asarray(x[0]), np.asarray(x[1]))
                       for x in jax.tree_util.tree_leaves(states) if np.ndim(x) > 1)
    assert seeds_differ, "the two seeds trained identical states under vmap"

    # a checkpoint round trip resumes bit-identically
    checkpoint.save(tmp_path, 3, (states, rngs))
    fresh = init_states(algo, config, spec, [0, 1])
    _, restored = checkpoint.load(checkpoint.latest(tmp_path), fresh)
    restored = jax.tree_util.tree_map(jnp.asarray, restored)
    copy = jax.tree_util.tree_map(jnp.copy, (states, rngs))  # the chunk donates its inputs
    continued, _, _ = chunk(*copy, data)
    resumed, _, _ = chunk(*restored, data)
    for a, b in zip(jax.tree_util.tree_leaves(continued), jax.tree_util.tree_leaves(resumed), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b)), "a restored checkpoint does not resume bit-identically"

    if entry.kind != "estimator":
        obs = jnp.asarray(dataset.observations[:7])
        state = jax.tree_util.tree_map(lambda x: x[0], continued)
        for deterministic in (True, False):
            action = np.asarray(module.act(state, obs, jax.random.PRNGKey(1), deterministic))
            assert action.shape == (7, spec.act_dim), f"act returned shape {action.shape}"
            assert np.all(np.isfinite(action)), "act returned non-finite actions"
            assert np.all(action >= spec.action_low - 1e-5) and np.all(action <= spec.action_high + 1e-5), \
                "act left the action box"
            if spec.num_actions is not None:
                assert np.array_equal(action, np.round(action)), "a discrete action is not an action index"

    unread = sorted(set(config_fields(type(config))) - reads)
    assert not unread, f"config fields nobody reads: {', '.join(unread)}"
