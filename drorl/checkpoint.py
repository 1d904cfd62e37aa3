"""Checkpoints: Flax msgpack of state pytrees (never pickle), written atomically, latest kept."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from drorl.errors import DrorlError, brief
from drorl.io_utils import write_bytes_atomic

_NAME = re.compile(r"^step_(\d+)\.msgpack$")


def save(directory: str | Path, step: int, tree: Any, keep: int = 2) -> Path:
    """Write ``tree`` as ``step_<step>.msgpack`` (atomically) and keep the ``keep`` newest files."""
    directory = Path(directory)
    state_dict = flax.serialization.to_state_dict(jax.device_get(tree))
    payload = flax.serialization.msgpack_serialize({"step": step, "tree": state_dict})
    path = directory / f"step_{step:09d}.msgpack"
    write_bytes_atomic(path, payload)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return path


def list_checkpoints(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(directory: str | Path) -> Path | None:
    paths = list_checkpoints(directory)
    return paths[-1] if paths else None


def load(path: str | Path, target: Any) -> tuple[int, Any]:
    """Restore a checkpoint into the structure of ``target``; returns (step, tree)."""
    path = Path(path)
    try:
        raw = flax.serialization.msgpack_restore(path.read_bytes())
        tree = flax.serialization.from_state_dict(target, raw["tree"])
        step = raw["step"]
    except Exception as exc:  # msgpack and flax raise many types on damaged bytes; none is a bug here
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise DrorlError(f"{path}: not a drorl checkpoint matching this run ({exc.__class__.__name__}: "
                         f"{detail})") from None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise DrorlError(f"{path}: its 'step' is {brief(step)}; expected a non-negative integer")
    mismatch = tree_mismatch(tree, target)
    if mismatch:
        raise DrorlError(f"{path}: not a drorl checkpoint matching this run ({mismatch})")
    return step, jax.tree_util.tree_map(np.asarray, tree)


def tree_mismatch(tree: Any, target: Any) -> str | None:
    """The first leaf whose structure, shape or dtype differs from ``target``'s, described; or None."""
    restored, structure = jax.tree_util.tree_flatten_with_path(tree)
    expected, expected_structure = jax.tree_util.tree_flatten_with_path(target)
    if structure != expected_structure:
        return "its tree differs from this run's state"
    for (key, leaf), (_, want) in zip(restored, expected):
        if not isinstance(leaf, (np.ndarray, np.generic, int, float, bool)):
            return f"{jax.tree_util.keystr(key)} is a {type(leaf).__name__}, not an array"
        have, need = np.asarray(leaf), np.asarray(want)
        if have.shape != need.shape or have.dtype != need.dtype:
            return (f"{jax.tree_util.keystr(key)} has shape {have.shape} and dtype {have.dtype}; "
                    f"expected {need.shape} {need.dtype}")
    return None


def require_same_run(path: Path, old: dict, new: dict, keys: tuple[str, ...], defaults: dict | None = None) -> None:
    """Refuse to resume into ``path`` (a config.json) unless ``keys`` agree; "a.b" looks inside a.

    Values are compared as JSON, so tuples in the new record equal lists read back from disk.
    ``defaults`` ({"config": {field: default}}, nested for nested configs) fills the sub-keys an older
    record lacks: a config field added after the run started, whose default is what that run used.
    """
    for key in keys:
        first, _, second = key.partition(".")
        before, after = old.get(first), new.get(first)
        if second:
            before, after = (before or {}).get(second), (after or {}).get(second)
        elif defaults and first in defaults and isinstance(before, dict):
            before = _with_defaults(before, defaults[first])
        before, after = json.loads(json.dumps(before)), json.loads(json.dumps(after))
        if before != after:
            detail = ""
            if isinstance(before, dict) and isinstance(after, dict):
                flat_before, flat_after = _flatten(before), _flatten(after)
                changed = sorted(k for k in flat_before.keys() | flat_after.keys()
                                 if flat_before.get(k) != flat_after.get(k))
                detail = " (" + ", ".join(f"{k}: {flat_before.get(k)!r} there, {flat_after.get(k)!r} here"
                                          for k in changed) + ")"
            raise DrorlError(f"{path}: the existing run has a different {key!r}{detail}; use a new --out directory")


def _with_defaults(values: dict, defaults: dict) -> dict:
    """``values`` with missing keys (at any depth) taken from ``defaults``."""
    merged = dict(defaults)
    for key, value in values.items():
        merged[key] = _with_defaults(value, defaults[key]) if isinstance(value, dict) and isinstance(
            defaults.get(key), dict) else value
    return merged


def _flatten(values: dict, prefix: str = "") -> dict:
    """Nested dicts as one dict with dotted keys."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
