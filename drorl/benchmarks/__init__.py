"""Benchmark suites that reproduce the papers' experiments (``drorl benchmark SUITE``)."""

from __future__ import annotations

import importlib
from types import ModuleType

from drorl.errors import DrorlError

SUITES = {"robust-il": "drorl.benchmarks.robust_il", "ovr": "drorl.benchmarks.ovr",
          "model-based": "drorl.benchmarks.model_based", "safety": "drorl.benchmarks.safety",
          "stackelberg": "drorl.benchmarks.stackelberg"}


def get_suite(name: str) -> ModuleType:
    if name not in SUITES:
        raise DrorlError(f"unknown benchmark suite {name!r}; expected one of {', '.join(SUITES)}")
    return importlib.import_module(SUITES[name])
