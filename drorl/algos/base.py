"""What every algorithm shares: the problem spec, input/output scaling and config parsing.

The protocol (architecture.md): a module per algorithm with a frozen ``Config`` dataclass and pure
``init(config, spec, key) -> state``, ``update(state, batch, key) -> (state, metrics)`` and
``act(state, obs, key, deterministic) -> action``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import flax.struct
import jax.numpy as jnp
import numpy as np
import optax

from drorl.data.dataset import Dataset
from drorl.errors import DrorlError


@dataclasses.dataclass(frozen=True)
class Spec:
    """Shapes, bounds and data statistics an algorithm is initialised with."""

    obs_dim: int
    act_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    obs_mean: np.ndarray
    obs_std: np.ndarray

    @classmethod
    def from_dataset(cls, dataset: Dataset, action_low=None, action_high=None,
                     standardize: bool = True) -> "Spec":
        """Bounds default to [-1, 1] (the MuJoCo tasks); statistics come from the data."""
        low = -np.ones(dataset.act_dim, np.float32) if action_low is None else np.asarray(action_low, np.float32)
        high = np.ones(dataset.act_dim, np.float32) if action_high is None else np.asarray(action_high, np.float32)
        if standardize:
            mean, std = dataset.observation_stats()
        else:
            mean, std = np.zeros(dataset.obs_dim, np.float32), np.ones(dataset.obs_dim, np.float32)
        return cls(dataset.obs_dim, dataset.act_dim, low, high, mean, std)


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


def config_with_overrides(config_cls: type, overrides: dict[str, str]) -> Any:
    """Build ``config_cls`` from defaults and ``key=value`` strings, checking names and types."""
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    values = {}
    for key, text in overrides.items():
        if key not in names:
            raise DrorlError(f"--set {key}: unknown option of {config_cls.__module__.split('.')[-1]}; "
                             f"expected one of {', '.join(names)}")
        values[key] = _coerce(text, hints[key], key)
    return config_cls(**values)


def config_from_dict(config_cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a config saved in config.json (tuples come back from JSON as lists)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}
    return config_cls(**kwargs)
