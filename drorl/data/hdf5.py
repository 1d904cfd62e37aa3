"""HDF5 in the D4RL layout: six arrays at the root, drorl's metadata as root attributes.

A D4RL file a user already has loads unchanged (its extra groups such as ``infos/`` or ``metadata/``
are ignored); files drorl writes carry their metadata in the ``drorl_metadata`` attribute (JSON)
and repeat its scalar entries as plain attributes so ``h5ls -v`` shows them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from drorl.data.dataset import D4RL_KEYS, Dataset, validate_arrays
from drorl.errors import DrorlError
from drorl.io_utils import atomic_path

METADATA_ATTR = "drorl_metadata"


def read_hdf5(path: str | Path, obs_dim: int | None = None, act_dim: int | None = None) -> Dataset:
    """Load and validate a D4RL-layout HDF5 file; a bad file raises a one-line DrorlError."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise DrorlError(f"{path}: no such file")
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise DrorlError(f"{name}: not a readable HDF5 file ({exc.__class__.__name__})") from None
    try:
        with fh:
            arrays = _read_arrays(fh, name)
            metadata = _read_metadata(fh)
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:  # h5py on a damaged file
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise DrorlError(f"{name}: damaged HDF5 file ({exc.__class__.__name__}: {detail})") from None
    validated = validate_arrays(arrays, name, obs_dim=obs_dim, act_dim=act_dim)
    return Dataset(**validated, metadata=metadata)


def _read_arrays(fh: h5py.File, name: str) -> dict[str, Any]:
    arrays: dict[str, Any] = {}
    for key in D4RL_KEYS:
        if key not in fh:
            continue
        node = fh[key]
        if not isinstance(node, h5py.Dataset):
            raise DrorlError(f"{name}: {key!r} is a group; expected an array")
        arrays[key] = node[()]
    return arrays


def _read_metadata(fh: h5py.File) -> dict[str, Any]:
    if METADATA_ATTR in fh.attrs:
        try:
            return dict(json.loads(fh.attrs[METADATA_ATTR]))
        except (TypeError, ValueError):
            raise DrorlError(f"{Path(fh.filename).name}: attribute {METADATA_ATTR!r} is not valid JSON") from None
    meta: dict[str, Any] = {}
    for key, value in fh.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (str, int, float, bool)):
            meta[key] = value
    return meta


def write_hdf5(dataset: Dataset, path: str | Path, compression: str | None = None) -> Path:
    """Write ``dataset`` atomically (temporary file, then rename); returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            for key, arr in dataset.arrays().items():
                fh.create_dataset(key, data=arr, compression=compression)
            fh.attrs[METADATA_ATTR] = json.dumps(dataset.metadata, sort_keys=True)
            for key, value in dataset.metadata.items():
                if isinstance(value, (str, int, float, bool)) and key != METADATA_ATTR:
                    fh.attrs[key] = value
    return path
