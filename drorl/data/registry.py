"""Named datasets under ``$DRORL_DATA`` (default ``~/.cache/drorl``), called ``TASK-KIND``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from drorl.data.dataset import Dataset
from drorl import zoo
from drorl.data.generate import ALL_KINDS, DEFAULT_DEMO_EPISODES, DEFAULT_TRANSITIONS, GENERATION_RULES, generate
from drorl.data.hdf5 import read_hdf5, write_hdf5
from drorl.envs.tasks import TASKS, get_task
from drorl.errors import DrorlError


def data_dir() -> Path:
    return Path(os.environ.get("DRORL_DATA", Path.home() / ".cache" / "drorl"))


def dataset_path(name: str) -> Path:
    return data_dir() / f"{name}.hdf5"


def parse_name(name: str) -> tuple[str, str] | None:
    """``"inverted-pendulum-expert-demos"`` -> ("inverted-pendulum", "expert-demos"); None if not a name."""
    for task in sorted(TASKS, key=len, reverse=True):
        if name.startswith(task + "-") and name[len(task) + 1:] in ALL_KINDS:
            return task, name[len(task) + 1:]
    return None


def list_datasets() -> list[Path]:
    directory = data_dir()
    return sorted(directory.glob("*.hdf5")) if directory.is_dir() else []


def load(path: str | Path) -> Dataset:
    """Read an HDF5 file, checking shapes against its task when the metadata names one."""
    path = Path(path)
    dataset = read_hdf5(path)
    env = dataset.metadata.get("env")
    if env:
        try:
            info = get_task(env)
        except DrorlError as exc:
            raise DrorlError(f"{path.name}: metadata 'env': {exc}") from None
        if dataset.obs_dim != info.obs_dim or dataset.act_dim != info.act_dim:
            raise DrorlError(f"{path.name}: shapes (obs {dataset.obs_dim}, act {dataset.act_dim}) do not match "
                             f"task {info.name} (obs {info.obs_dim}, act {info.act_dim})")
    return dataset


def _is_default_generation(dataset: Dataset) -> bool:
    """Generated with what ``resolve`` would use on first use: seed 0, default size, no corruptions."""
    meta = dataset.metadata
    if meta.get("seed") != 0 or meta.get("corruptions"):
        return False
    if meta.get("kind") == "expert-demos":
        return dataset.num_episodes == DEFAULT_DEMO_EPISODES.get(meta.get("env"))
    return len(dataset) == DEFAULT_TRANSITIONS


def _stale_reason(dataset: Dataset) -> str | None:
    """Why a dataset drorl generated no longer matches what generation would give now, or None.

    Imported data (``source`` in the metadata, e.g. from Minari) is the user's, never stale: drorl
    cannot remake it, even when it carries the metadata of an earlier drorl export."""
    meta = dataset.metadata
    if "generator" not in meta or "source" in meta:
        return None
    changed = zoo.changed_policies(meta.get("zoo_policies") or {})
    if changed:
        return f"generated from zoo policies that have changed since ({', '.join(changed)})"
    rules = meta.get("generation_rules", 1)  # files written before the stamp follow rule 1
    if rules < GENERATION_RULES:
        return f"generated under older rules (generation_rules {rules}, now {GENERATION_RULES}; drorl.data.generate)"
    return None


def _stale(dataset: Dataset, name: str, regenerable: bool) -> str | None:
    """Why ``dataset`` must be regenerated (the zoo or the generation rules changed under it), or None
    when it is current; an error when it cannot be regenerated as it was made (custom size, seed or
    corruptions)."""
    reason = _stale_reason(dataset)
    if reason is None or (regenerable and _is_default_generation(dataset)):
        return reason
    raise DrorlError(f"{dataset_path(name)}: {reason}; regenerate it with `drorl datasets generate` "
                     "(it overwrites) or delete it")


def resolve(id_or_path: str, generate_missing: bool = True, progress: bool = True) -> tuple[Dataset, str, Path]:
    """A dataset by path or by name; a missing named dataset is generated (and saved) on first use."""
    candidate = Path(id_or_path).expanduser()
    if candidate.is_file():
        return load(candidate), str(candidate), candidate
    parsed = parse_name(id_or_path)
    if dataset_path(id_or_path).is_file():
        dataset = load(dataset_path(id_or_path))
        reason = _stale(dataset, id_or_path, regenerable=parsed is not None and generate_missing)
        if reason is None:
            return dataset, id_or_path, dataset_path(id_or_path)
        sys.stderr.write(f"{id_or_path}: {reason}; regenerating\n")
    if parsed is None:
        raise DrorlError(f"{id_or_path}: no such file, and not a dataset name TASK-KIND "
                         f"(tasks: {', '.join(TASKS)}; kinds: {', '.join(ALL_KINDS)})")
    path = dataset_path(id_or_path)
    if not generate_missing:
        raise DrorlError(f"{id_or_path}: not generated yet (run `drorl datasets generate {parsed[0]} {parsed[1]}`)")
    dataset = generate(parsed[0], parsed[1], progress=progress)
    write_hdf5(dataset, path)
    return dataset, id_or_path, path
