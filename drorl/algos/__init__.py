"""Algorithm registry: names used by the CLI, sweeps and tests, mapped to algorithm modules.

Each entry records the module, its kind (``offline``: trained from a dataset by ``drorl train``;
``online``: trained by interacting, ``drorl train-online``; ``estimator``: fitted from data for another
policy, no ``act``), the action spaces it handles, a one-line summary and, for an algorithm that reads
a particular kind of task (the safety layer of DSRL), the tasks it runs on. Adding an algorithm is a new
module plus a line here (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Literal

from drorl.errors import DrorlError

Kind = Literal["offline", "online", "estimator"]


@dataclasses.dataclass(frozen=True)
class Entry:
    module: str
    kind: Kind
    action_spaces: tuple[str, ...]
    summary: str
    tasks: tuple[str, ...] = ()  # empty: any task of its action spaces


REGISTRY: dict[str, Entry] = {
    "bc": Entry("drorl.algos.bc", "offline", ("continuous",), "behaviour cloning"),
    "drbc": Entry("drorl.algos.drbc", "offline", ("continuous",), "distributionally robust BC (TV ball)"),
    "be-droil": Entry("drorl.algos.be_droil", "offline", ("continuous",),
                      "robust imitation over an f-divergence ball of occupancies (balance equation)"),
    "bcq": Entry("drorl.algos.bcq", "offline", ("continuous",), "batch-constrained deep Q-learning"),
    "bcq-ovr": Entry("drorl.algos.ovr", "offline", ("continuous",), "BCQ with offline variance regularisation"),
    "dualdice": Entry("drorl.algos.dualdice", "estimator", ("continuous",),
                      "stationary-distribution ratios of a target policy (off-policy evaluation)"),
    "combo": Entry("drorl.algos.combo", "offline", ("continuous",),
                   "conservative model-based offline RL (SAC on real and model data, conservative critic)"),
    "dromo": Entry("drorl.algos.dromo", "offline", ("continuous",),
                   "distributionally robust COMBO: variance penalty over the f-mixture of behaviour and policy"),
    "mopo": Entry("drorl.algos.mopo", "offline", ("continuous",),
                  "model-based offline RL with the max-std uncertainty penalty (fixed lambda)"),
    "mopo-auto": Entry("drorl.algos.mopo_auto", "offline", ("continuous",),
                       "MOPO with an entropy penalty whose weight is learned (DROMO paper, Appendix B)"),
    "sac": Entry("drorl.algos.sac", "online", ("continuous",), "soft actor-critic"),
    "dqn": Entry("drorl.algos.dqn", "online", ("discrete",), "double DQN"),
    "ddpg": Entry("drorl.algos.ddpg", "online", ("continuous",), "deep deterministic policy gradient"),
    "dsrl": Entry("drorl.algos.dsrl", "online", ("continuous",),
                  "DDPG through a CBF-QP safety layer guarding a Wasserstein worst-case disturbance",
                  tasks=("safe-unicycle", "safe-double-integrator", "safe-quadcopter")),
    "bc-discrete": Entry("drorl.algos.bc_discrete", "offline", ("discrete",),
                         "behaviour cloning with a categorical policy"),
    "fqi": Entry("drorl.algos.fqi", "offline", ("discrete",), "fitted Q iteration"),
    "cql": Entry("drorl.algos.cql", "offline", ("discrete",), "discrete conservative Q-learning, CQL(H)"),
    "stackelberg": Entry("drorl.algos.stackelberg", "offline", ("discrete", "continuous"),
                         "StackelbergLearner: total-derivative policy leader, kernel-Bellman pessimistic follower"),
}


def _key(name: str) -> str:
    return name.lower().replace("_", "-")


def names(kind: Kind | None = None) -> list[str]:
    return sorted(n for n, e in REGISTRY.items() if kind is None or e.kind == kind)


def entry(name: str) -> Entry:
    if _key(name) not in REGISTRY:
        raise DrorlError(f"unknown algorithm {name!r}; expected one of {', '.join(names())}")
    return REGISTRY[_key(name)]


def get(name: str, kind: Kind | None = None) -> ModuleType:
    """The module implementing algorithm ``name`` (Config, init, update, act); with ``kind``, refuse an
    algorithm of another kind in one line."""
    found = entry(name)
    if kind is not None and found.kind != kind:
        use = {"offline": "drorl train", "online": "drorl train-online", "estimator": "drorl ope"}[found.kind]
        raise DrorlError(f"{_key(name)} is an {found.kind} algorithm, not {kind}; use {use} "
                         f"(expected one of {', '.join(names(kind))})")
    return importlib.import_module(found.module)
