"""Minari datasets <-> drorl ``Dataset``, on the local disk only: nothing is ever downloaded.

Datasets live under Minari's root: ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``.

A Minari episode keeps ``T + 1`` observations and ``T`` actions, rewards, terminations and
truncations; its D4RL rows are ``observations = obs[:-1]``, ``next_observations = obs[1:]``,
``terminals = terminations`` and ``timeouts = truncations & ~terminations``, and the last step is
always an episode end (a time-out when neither flag is set). Only flat float ``Box`` observation
and action spaces are supported.

What survives ``export_minari`` then ``import_minari``:

* the six arrays, exactly (observations are stored in the environment's dtype, float64 for the
  MuJoCo tasks, which holds float32 values exactly);
* the episode structure, except that a final episode cut with no flag comes back as a time-out,
  and a row flagged both terminal and time-out comes back as a terminal only;
* drorl's whole metadata dict (``kind``, ``seed``, reference returns, ...), kept as JSON in the
  ``drorl_metadata`` entry of the dataset's ``metadata.json``; ``source`` and ``minari_id`` are
  rewritten to name the Minari dataset read;
* the Gymnasium environment spec (``max_episode_steps`` and kwargs included), since an import records
  it as ``metadata["env_spec"]`` and an export prefers it to the registered spec of ``env_id``.

The reference returns (``ref_min_score`` / ``ref_max_score``) are also written as Minari's own
attributes, so Minari's ``get_normalized_score`` works on exported datasets, and are read from
datasets that carry them. Minari's other attributes (author, description, per-episode seeds and
infos) are not carried into drorl. A dataset whose ``next_observations`` differ from the next row's
``observations`` inside an episode cannot be stored as one observation sequence: export refuses it.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import gymnasium
import numpy as np
from gymnasium.envs.registration import EnvSpec

from drorl.data.dataset import D4RL_KEYS, Dataset
from drorl.envs.tasks import get_task
from drorl.errors import DrorlError

if TYPE_CHECKING:
    from minari import EpisodeData, MinariDataset
    from minari.data_collector import EpisodeBuffer

METADATA_KEY = "drorl_metadata"
_REF_KEYS = ("ref_min_score", "ref_max_score")
# Minari's advice to dataset publishers (author, code_permalink, ... "is set to None").
_PUBLISHER_ADVICE = r"(`\w+` is set to None|env_spec is None)"


def import_minari(dataset_id: str, task: str | None = None) -> Dataset:
    """Load the local Minari dataset ``dataset_id`` as a ``Dataset`` (D4RL rows, drorl metadata).

    ``task`` (a drorl task name or Gymnasium id) overrides the task read off the dataset's env spec;
    when a task is known, the array shapes are checked against it.
    """
    minari = _require_minari()
    owner = f"minari dataset {dataset_id!r}"
    try:
        source = _load_local(minari, dataset_id)
        _check_flat_box(owner, "observation", source.observation_space)
        _check_flat_box(owner, "action", source.action_space)
        metadata = _import_metadata(source, dataset_id, task)
        rows = _rows(source)
    except DrorlError:
        raise
    except Exception as exc:  # Minari's readers raise whatever their parsers meet in a damaged dataset
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise DrorlError(f"{owner}: damaged or not readable ({exc.__class__.__name__}: {detail})") from None
    try:
        info = get_task(metadata["env"]) if "env" in metadata else None
    except DrorlError as exc:
        raise DrorlError(f"{owner}: {exc}") from None
    return Dataset.from_arrays(rows, metadata, source=f"minari:{dataset_id}",
                               obs_dim=info.obs_dim if info else None, act_dim=info.act_dim if info else None)


def export_minari(dataset: Dataset, dataset_id: str | None = None, overwrite: bool = False) -> str:
    """Write ``dataset`` as a local Minari dataset and return its id.

    The id defaults to ``drorl/<task>/<kind>-v0``. The environment comes from ``metadata["env_spec"]``,
    ``metadata["env_id"]`` or the task in ``metadata["env"]``; with none of them the spaces are
    unbounded float32 boxes and no environment is recorded. An existing dataset of that id is an
    error unless ``overwrite``.
    """
    minari = _require_minari()
    dataset_id = dataset_id or _default_id(dataset.metadata)
    _check_id(minari, dataset_id)
    _check_chained(dataset)
    spec = _env_spec(dataset.metadata)
    obs_space, act_space = _spaces(spec, dataset)
    drorl_metadata = json.dumps(dataset.metadata, sort_keys=True)  # before anything is deleted
    path = minari.storage.get_dataset_path(dataset_id)
    _make_room(path, dataset_id, overwrite)
    buffers = [_episode_buffer(dataset, start, stop, obs_space.dtype, act_space.dtype)
               for start, stop in _episode_bounds(dataset)]
    try:
        created = _create(minari, dataset_id, buffers, spec, obs_space, act_space, dataset.metadata)
        created.storage.update_metadata({METADATA_KEY: drorl_metadata})
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return dataset_id


def _require_minari() -> ModuleType:
    try:
        import minari
        import minari.storage
    except ImportError:
        raise DrorlError("Minari support needs the minari package: pip install 'drorl[minari]'") from None
    return minari


def _load_local(minari: ModuleType, dataset_id: str) -> MinariDataset:
    """Open a dataset already on disk; a missing one is a DrorlError, never a download."""
    if not (minari.storage.get_dataset_path(dataset_id) / "data").is_dir():
        raise DrorlError(f"minari dataset {dataset_id!r} not found locally in "
                         f"{minari.storage.get_dataset_path()}; nothing is downloaded")
    try:
        return minari.load_dataset(dataset_id, download=False)
    except ValueError as exc:
        raise DrorlError(f"minari dataset {dataset_id!r}: {exc}") from None


def _check_flat_box(owner: str, what: str, space: gymnasium.Space) -> None:
    if not (isinstance(space, gymnasium.spaces.Box) and len(space.shape) == 1
            and np.issubdtype(space.dtype, np.floating)):
        raise DrorlError(f"{owner}: {what} space {space} is not supported; drorl needs a flat float Box")


def _rows(source: MinariDataset) -> dict[str, np.ndarray]:
    """All non-empty episodes of ``source`` as D4RL rows, in episode order."""
    episodes = [_episode_rows(episode) for episode in source.iterate_episodes() if len(episode) > 0]
    if not episodes:
        raise DrorlError(f"minari dataset {source.id!r} has no steps")
    return {key: np.concatenate([episode[key] for episode in episodes]) for key in D4RL_KEYS}


def _episode_rows(episode: EpisodeData) -> dict[str, np.ndarray]:
    observations = np.asarray(episode.observations)
    terminals = np.asarray(episode.terminations, dtype=bool)
    timeouts = np.asarray(episode.truncations, dtype=bool) & ~terminals
    timeouts[-1] = not terminals[-1]  # the episode ends here whatever its flags say
    return {
        "observations": observations[:-1],
        "actions": np.asarray(episode.actions),
        "rewards": np.asarray(episode.rewards),
        "next_observations": observations[1:],
        "terminals": terminals,
        "timeouts": timeouts,
    }


def _import_metadata(source: MinariDataset, dataset_id: str, task: str | None) -> dict[str, Any]:
    """drorl's stored metadata if any, else Minari's reference scores; then env and source keys."""
    raw = source.storage.metadata
    if METADATA_KEY in raw:
        metadata = dict(json.loads(raw[METADATA_KEY]))
    else:
        metadata = {"kind": "minari"}
        if all(raw.get(key) is not None for key in _REF_KEYS):
            metadata.update({key: float(raw[key]) for key in _REF_KEYS})
            metadata["ref_source"] = "minari metadata"
    spec = source.env_spec
    if spec is not None:
        metadata.update({"env_id": spec.id, "env_spec": spec.to_json()})
    env = get_task(task).name if task is not None else _known_task(metadata.get("env_id"))
    if env is not None:
        metadata["env"] = env
    metadata.update({"source": f"minari:{dataset_id}", "minari_id": dataset_id})
    return metadata


def _known_task(name: str | None) -> str | None:
    """The drorl task called ``name`` (short name or Gymnasium id), or None if drorl has none."""
    if name is None:
        return None
    try:
        return get_task(name).name
    except DrorlError:
        return None


def _default_id(metadata: dict[str, Any]) -> str:
    task = _known_task(metadata.get("env") or metadata.get("env_id"))
    kind = metadata.get("kind")
    if task is None or not kind:
        raise DrorlError("the dataset's metadata names no drorl task and kind; give a minari dataset id")
    return f"drorl/{task}/{kind}-v0"


def _check_id(minari: ModuleType, dataset_id: str) -> None:
    try:
        minari.dataset.minari_dataset.parse_dataset_id(dataset_id)
    except (ValueError, TypeError):  # TypeError: an id without "-v<version>"
        raise DrorlError(f"minari dataset id {dataset_id!r} is malformed; expected "
                         f"(namespace/)name-v<version>, e.g. drorl/hopper/expert-v0") from None


def _check_chained(dataset: Dataset) -> None:
    """Inside an episode, ``next_observations[i]`` must be ``observations[i + 1]``."""
    differs = np.any(dataset.next_observations[:-1] != dataset.observations[1:], axis=1)
    bad = np.flatnonzero(differs & ~dataset.episode_ends[:-1])
    if bad.size:
        row = int(bad[0])
        raise DrorlError(f"row {row}: 'next_observations' differs from row {row + 1}'s 'observations' inside an "
                         f"episode; a Minari episode holds one observation sequence, so it cannot be exported")


def _env_spec(metadata: dict[str, Any]) -> EnvSpec | None:
    """The recorded env spec, else the registered spec of the env id or task, else None."""
    if "env_spec" in metadata:
        return EnvSpec.from_json(metadata["env_spec"])
    env_id = metadata.get("env_id") or (get_task(metadata["env"]).gym_id if metadata.get("env") else None)
    if env_id is None:
        return None
    try:
        return gymnasium.spec(env_id)
    except gymnasium.error.Error:
        raise DrorlError(f"environment {env_id!r} is not registered with gymnasium; "
                         f"import the package that registers it") from None


def _spaces(spec: EnvSpec | None, dataset: Dataset) -> tuple[gymnasium.spaces.Box, gymnasium.spaces.Box]:
    """The environment's observation and action boxes (checked against the data), or unbounded ones."""
    if spec is None:
        return (gymnasium.spaces.Box(-np.inf, np.inf, (dataset.obs_dim,), np.float32),
                gymnasium.spaces.Box(-np.inf, np.inf, (dataset.act_dim,), np.float32))
    env = gymnasium.make(spec)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    owner = f"environment {spec.id!r}"
    _check_flat_box(owner, "observation", obs_space)
    _check_flat_box(owner, "action", act_space)
    if obs_space.shape != (dataset.obs_dim,) or act_space.shape != (dataset.act_dim,):
        raise DrorlError(f"{owner} has observation shape {obs_space.shape} and action shape {act_space.shape}; "
                         f"the dataset has {dataset.obs_dim} and {dataset.act_dim} columns")
    return obs_space, act_space


def _make_room(path: Path, dataset_id: str, overwrite: bool) -> None:
    """Clear the way for a new dataset at ``path``: only an existing dataset, and only if ``overwrite``."""
    if not path.exists():
        return
    if not (path / "data").is_dir():
        raise DrorlError(f"{path} exists and is not a minari dataset; choose another id than {dataset_id!r}")
    if not overwrite:
        raise DrorlError(f"minari dataset {dataset_id!r} already exists in {path.parent}; "
                         f"pass overwrite=True to replace it")
    shutil.rmtree(path)


def _episode_bounds(dataset: Dataset) -> list[tuple[int, int]]:
    starts = dataset.episode_starts
    stops = np.append(starts[1:], len(dataset))
    return [(int(start), int(stop)) for start, stop in zip(starts, stops)]


def _episode_buffer(dataset: Dataset, start: int, stop: int, obs_dtype: np.dtype,
                    act_dtype: np.dtype) -> EpisodeBuffer:
    """Rows ``start:stop`` as one Minari episode: ``T + 1`` observations, a flag on the last step."""
    from minari.data_collector import EpisodeBuffer

    observations = np.concatenate([dataset.observations[start:stop], dataset.next_observations[stop - 1:stop]])
    truncations = dataset.timeouts[start:stop].copy()
    truncations[-1] = not dataset.terminals[stop - 1]
    return EpisodeBuffer(
        observations=observations.astype(obs_dtype),
        actions=dataset.actions[start:stop].astype(act_dtype),
        rewards=dataset.rewards[start:stop],
        terminations=dataset.terminals[start:stop],
        truncations=truncations,
    )


def _create(minari: ModuleType, dataset_id: str, buffers: list[EpisodeBuffer], spec: EnvSpec | None,
            obs_space: gymnasium.Space, act_space: gymnasium.Space, metadata: dict[str, Any]) -> MinariDataset:
    has_refs = all(metadata.get(key) is not None for key in _REF_KEYS)
    refs = {key: float(metadata[key]) for key in _REF_KEYS} if has_refs else {}
    policy = metadata.get("behavior_policy")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PUBLISHER_ADVICE, category=UserWarning)
        return minari.create_dataset_from_buffers(
            dataset_id, buffers, env=spec, eval_env=spec, observation_space=obs_space,
            action_space=act_space, algorithm_name=None if policy is None else str(policy),
            description=f"Exported by drorl; drorl's metadata is the {METADATA_KEY!r} entry (JSON).",
            data_format="hdf5", **refs,
        )
