"""What every algorithm shares: the protocol, the problem spec, input/output scaling and configs.

The protocol (``Algorithm``; docs/architecture.md): a module per algorithm with a frozen ``Config``
dataclass (which may nest other configs) and pure ``init(config, spec, key) -> state``,
``update(state, batch, key) -> (state, metrics)`` and ``act(state, obs, key, deterministic) -> action``;
optionally ``sample(data, state, key) -> batch`` when it draws its own batches, and
``prepare(config, dataset, spec, directory, progress) -> spec`` when ``init`` needs something computed
once from the whole dataset outside the compiled program (a dynamics ensemble), which it returns in
``spec.prepared`` and may cache in ``directory``; and, online, ``executed_action(state, obs, action) ->
action`` when it executes something other than a raw action it is given (DSRL's safety layer: the
online loop's uniform warm-up actions pass through it).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Protocol, runtime_checkable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from drorl.data.dataset import Dataset
from drorl.errors import DrorlError, brief


@runtime_checkable
class Algorithm(Protocol):
    """What the training loops, the zoo and the contract test call. Estimators have no ``act``."""

    Config: type

    def init(self, config: Any, spec: "Spec", key: jax.Array) -> Any: ...

    def update(self, state: Any, batch: dict[str, jax.Array], key: jax.Array) -> tuple[Any, dict]: ...

    def act(self, state: Any, obs: jax.Array, key: jax.Array, deterministic: bool = True) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class Spec:
    """Shapes, bounds and data statistics an algorithm is initialised with.

    ``task`` names the environment when known; ``num_actions`` is set for discrete tasks, whose actions
    are one float column holding the action index (bounds 0 and num_actions - 1). ``prepared`` holds
    what the algorithm's ``prepare`` computed from the data (a pytree; None for most algorithms).
    """

    obs_dim: int
    act_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    obs_mean: np.ndarray
    obs_std: np.ndarray
    task: str | None = None
    num_actions: int | None = None
    prepared: Any = None

    @classmethod
    def from_dataset(cls, dataset: Dataset, action_low=None, action_high=None, standardize: bool = True,
                     task: str | None = None, num_actions: int | None = None) -> "Spec":
        """Bounds default to [-1, 1] (the MuJoCo tasks); statistics come from the data."""
        low = -np.ones(dataset.act_dim, np.float32) if action_low is None else np.asarray(action_low, np.float32)
        high = np.ones(dataset.act_dim, np.float32) if action_high is None else np.asarray(action_high, np.float32)
        if standardize:
            mean, std = dataset.observation_stats()
        else:
            mean, std = np.zeros(dataset.obs_dim, np.float32), np.ones(dataset.obs_dim, np.float32)
        return cls(dataset.obs_dim, dataset.act_dim, low, high, mean, std, task, num_actions)


@flax.struct.dataclass
class Scaler:
    """Observation standardisation and the map between the task's action box and [-1, 1]^A."""

    obs_mean: jnp.ndarray
    obs_std: jnp.ndarray
    action_low: jnp.ndarray
    action_high: jnp.ndarray

    @classmethod
    def from_spec(cls, spec: Spec) -> "Scaler":
        return cls(*(jnp.asarray(x, jnp.float32) for x in
                     (spec.obs_mean, spec.obs_std, spec.action_low, spec.action_high)))

    def observation(self, obs: jnp.ndarray) -> jnp.ndarray:
        return (obs - self.obs_mean) / self.obs_std

    def to_unit_action(self, action: jnp.ndarray) -> jnp.ndarray:
        return 2.0 * (action - self.action_low) / (self.action_high - self.action_low) - 1.0

    def from_unit_action(self, unit: jnp.ndarray) -> jnp.ndarray:
        return self.action_low + 0.5 * (unit + 1.0) * (self.action_high - self.action_low)


def adam_with_step_decay(lr: float, decay: float, decay_every: int) -> optax.GradientTransformation:
    """Adam whose learning rate is multiplied by ``decay`` every ``decay_every`` steps (1.0: constant)."""
    if decay == 1.0 or decay_every <= 0:
        return optax.adam(lr)
    schedule = optax.exponential_decay(lr, transition_steps=decay_every, decay_rate=decay, staircase=True)
    return optax.adam(schedule)


def _coerce(text: str, annotation: Any, key: str) -> Any:
    """Parse ``text`` as a value of the config field type ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    try:
        if annotation is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if annotation in (int, float, str):
            return annotation(text)
        if origin is tuple:
            elem = args[0] if args else int
            return tuple(elem(x) for x in text.replace("(", "").replace(")", "").split(",") if x.strip())
        if origin is typing.Literal:
            if text not in args:
                raise DrorlError(f"--set {key}={text}: expected one of {', '.join(map(str, args))}")
            return text
        if origin in (typing.Union, types.UnionType):
            for arg in args:
                if arg is type(None) and text.lower() == "none":
                    return None
            return _coerce(text, next(a for a in args if a is not type(None)), key)
    except DrorlError:
        raise
    except (ValueError, StopIteration):
        pass
    else:
        return text
    raise DrorlError(f"--set {key}={text}: cannot read {text!r} as {getattr(annotation, '__name__', annotation)}")


def config_fields(config_cls: type, prefix: str = "") -> dict[str, Any]:
    """Every settable option of a (possibly nested) config class: dotted name -> type annotation."""
    hints = typing.get_type_hints(config_cls)
    out = {}
    for field in dataclasses.fields(config_cls):
        annotation = hints[field.name]
        if dataclasses.is_dataclass(annotation):
            out.update(config_fields(annotation, f"{prefix}{field.name}."))
        else:
            out[f"{prefix}{field.name}"] = annotation
    return out


def config_value(config: Any, path: str) -> Any:
    """The value at a dotted path into a (possibly nested) config (``policy.lr``; ``model`` for a nested config)."""
    for part in path.split("."):
        config = getattr(config, part)
    return config


def _owner(config_cls: type) -> str:
    return config_cls.__module__.split(".")[-1]


def replace_config(config: Any, overrides: dict[str, Any], option: str = "--set") -> Any:
    """``config`` with ``overrides`` applied; keys are dotted paths into nested configs (``policy.lr``)."""
    known = config_fields(type(config))
    grouped: dict[str, dict[str, Any]] = {}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in known:
            raise DrorlError(f"{option} {key}: unknown option of {_owner(type(config))}; "
                             f"expected one of {', '.join(known)}")
        head, _, rest = key.partition(".")
        if rest:
            grouped.setdefault(head, {})[rest] = value
        else:
            changes[key] = value
    for head, sub in grouped.items():
        changes[head] = replace_config(getattr(config, head), sub, option)
    return dataclasses.replace(config, **changes)


def config_with_overrides(config_cls: type, overrides: dict[str, str]) -> Any:
    """Build ``config_cls`` from defaults and ``key=value`` strings, checking names and types."""
    known = config_fields(config_cls)
    for key in overrides:
        if key not in known:
            raise DrorlError(f"--set {key}: unknown option of {_owner(config_cls)}; expected one of {', '.join(known)}")
    return replace_config(config_cls(), {key: _coerce(text, known[key], key) for key, text in overrides.items()})


def config_from_dict(config_cls: type, values: dict[str, Any], source: str = "config") -> Any:
    """Rebuild a config saved in config.json (nested configs as nested objects; tuples come back from
    JSON as lists). Missing fields take their defaults; an unknown field is an error (a config written
    by another version of drorl)."""
    if not isinstance(values, dict):
        raise DrorlError(f"{source}: the config of {_owner(config_cls)} should be a group of options, "
                         f"not {type(values).__name__}")
    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise DrorlError(f"{source}: unknown option(s) {', '.join(unknown)} of {_owner(config_cls)} "
                         f"(written by another drorl version?)")
    kwargs = {}
    for name, value in values.items():
        if dataclasses.is_dataclass(hints[name]):
            if not isinstance(value, dict):
                raise DrorlError(f"{source}: option {name} of {_owner(config_cls)} should be a group of options")
            kwargs[name] = config_from_dict(hints[name], value, source)
        elif not fits_type(hints[name], value):
            raise DrorlError(f"{source}: option {name} of {_owner(config_cls)} is {brief(value)}; expected "
                             f"{_type_text(hints[name])}")
        else:
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    return config_cls(**kwargs)


def fits_type(hint: Any, value: Any) -> bool:
    """Whether a value read from JSON fits a config field's annotation (tuples arrive as lists; an int
    is a float). Annotations other than these plain ones are not checked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(fits_type(a, value) for a in args)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(fits_type(args[0], v) for v in value)
        return len(args) == len(value) and all(fits_type(a, v) for a, v in zip(args, value))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _type_text(hint: Any) -> str:
    return str(hint).replace("typing.", "")
