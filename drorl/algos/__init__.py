"""Algorithm registry: names used by the CLI, sweeps and tests, mapped to algorithm modules."""

from __future__ import annotations

import importlib
from types import ModuleType

from drorl.errors import DrorlError

_MODULES = {
    "bc": "drorl.algos.bc",
    "be-droil": "drorl.algos.be_droil",
    "bcq": "drorl.algos.bcq",
    "bcq-ovr": "drorl.algos.ovr",
    "drbc": "drorl.algos.drbc",
    "sac": "drorl.algos.sac",
    "dqn": "drorl.algos.dqn",
}


def names() -> list[str]:
    return sorted(_MODULES)


def get(name: str) -> ModuleType:
    """The module implementing algorithm ``name`` (Config, init, update, act)."""
    key = name.lower().replace("_", "-")
    if key not in _MODULES:
        raise DrorlError(f"unknown algorithm {name!r}; expected one of {', '.join(names())}")
    return importlib.import_module(_MODULES[key])
