"""Dynamics perturbations for robustness evaluation, and the wrapper that applies and undoes them.

A ``Perturbation`` is a family and a value. ``apply_perturbation`` writes nominal values, then a
perturbation, into any MuJoCo model (``drorl.envs.batched`` uses it on model copies).
``PerturbedEnv`` copies the nominal value of every model field a family may touch when it is
built, and on every ``reset()`` writes the nominal values back before applying the current
perturbation: Gymnasium's ``reset()`` does not reload the MuJoCo model, so without this a changed
gravity would leak into later episodes.

A ``CombinedPerturbation`` applies perturbations of several families at once (a cell of a
two-family grid); each family writes its own model fields, so they compose in any order.

Families and what their value means (``p`` a relative change, ``x`` an absolute value):

=============== =================================================================================
gravity         ``opt.gravity[2] *= 1 + p``
damping         ``dof_damping[dof] *= 1 + p`` on the task's joint DOFs
stiffness       ``jnt_stiffness[jnt] = x`` on the task's stiffness joints (halfcheetah: nominal
                ``* (1 + p)`` on the back joints), with the task's spring reference ``qpos_spring``
actuator_range  ``actuator_ctrlrange = [-x, x]`` for every actuator, ``actuator_ctrllimited = 1``
frictionloss    ``dof_frictionloss[dof] = x`` on the task's joint DOFs
mass            ``body_mass[body] *= 1 + p`` for every body except the world
friction        ``geom_friction[geom, 0] *= 1 + p`` for every geom
action_noise    the action becomes ``clip(a + N(0, x I))``; ``x`` is a variance
=============== =================================================================================

Joint choices per task (``JOINT_TARGETS``), where the DR-BC setup left them open: walker2d
stiffness acts on all six leg joints (3-8) with the nominal spring reference 0; ant stiffness on
hips and ankles (joints 1-8) with the nominal reference 0; inverted-pendulum's damping, friction
loss and stiffness act on the pole hinge (joint 1, DOF 1), stiffness pulling toward 0.1 rad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, SupportsFloat

import gymnasium
import numpy as np

from drorl.envs.tasks import TaskInfo, get_task
from drorl.errors import DrorlError

FAMILIES: tuple[str, ...] = (
    "gravity", "damping", "stiffness", "actuator_range", "frictionloss", "mass", "friction", "action_noise",
)

# Smallest valid value per family and whether it is allowed itself (a scale 1 + p must stay >= 0,
# masses > 0, ranges > 0, variances and friction losses >= 0). Absolute stiffness is checked per task.
_MINIMUM_VALUE: dict[str, tuple[float, bool]] = {
    "gravity": (-1.0, True), "damping": (-1.0, True), "stiffness": (-1.0, True),
    "actuator_range": (0.0, False), "frictionloss": (0.0, True), "mass": (-1.0, False),
    "friction": (-1.0, True), "action_noise": (0.0, True),
}

# Model fields any family writes; "opt.gravity" names model.opt.gravity.
MODEL_FIELDS: tuple[str, ...] = (
    "opt.gravity", "dof_damping", "jnt_stiffness", "qpos_spring", "actuator_ctrlrange",
    "actuator_ctrllimited", "dof_frictionloss", "body_mass", "geom_friction",
)

_NOISE_STREAM = 0x6E6F6973  # mixed into the reset seed so action noise has its own random stream


def check_family(family: str) -> None:
    """Raise a ``DrorlError`` naming ``family`` and the valid families unless it is one of ``FAMILIES``."""
    if family not in FAMILIES:
        raise DrorlError(f"unknown perturbation family {family!r}; expected one of {', '.join(FAMILIES)}")


@dataclass(frozen=True)
class Perturbation:
    """One point of a perturbation sweep: a family from ``FAMILIES`` and its value."""

    family: str
    value: float

    def __post_init__(self) -> None:
        check_family(self.family)
        value = float(self.value)
        minimum, inclusive = _MINIMUM_VALUE[self.family]
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            bound = ">=" if inclusive else ">"
            raise DrorlError(f"perturbation {self.family}={self.value}: value must be finite and {bound} {minimum:g}")
        object.__setattr__(self, "value", value)

    @property
    def label(self) -> str:
        """Short text such as ``gravity=0.1``, for tables, plots and progress bars."""
        return f"{self.family}={self.value:g}"


@dataclass(frozen=True)
class CombinedPerturbation:
    """Perturbations of distinct families applied together. Every family writes model fields of its
    own (action noise none), each computed from the nominal model, so the order of ``parts`` does
    not change the dynamics."""

    parts: tuple[Perturbation, ...]

    def __post_init__(self) -> None:
        families = [part.family for part in self.parts]
        if len(families) < 2 or len(set(families)) != len(families):
            raise DrorlError(f"a combined perturbation needs two or more distinct families; got "
                             f"{', '.join(families) or 'none'}")

    @property
    def label(self) -> str:
        """Short text such as ``gravity=0.1,damping=0.5``."""
        return ",".join(part.label for part in self.parts)


AnyPerturbation = Perturbation | CombinedPerturbation


def components(perturbation: AnyPerturbation | None) -> tuple[Perturbation, ...]:
    """The single-family perturbations ``perturbation`` applies (none for nominal dynamics)."""
    if perturbation is None:
        return ()
    return perturbation.parts if isinstance(perturbation, CombinedPerturbation) else (perturbation,)


def combine(parts: list[Perturbation]) -> AnyPerturbation | None:
    """``parts`` as one perturbation: ``None`` when empty, the part itself when alone."""
    if len(parts) < 2:
        return parts[0] if parts else None
    return CombinedPerturbation(tuple(parts))


def action_noise_variance(perturbation: AnyPerturbation | None) -> float:
    """The variance of the action noise ``perturbation`` adds (0: it adds none)."""
    return next((part.value for part in components(perturbation) if part.family == "action_noise"), 0.0)


def without_action_noise(perturbation: AnyPerturbation | None) -> AnyPerturbation | None:
    """The part of ``perturbation`` that changes the model: everything but its action noise."""
    return combine([part for part in components(perturbation) if part.family != "action_noise"])


@dataclass(frozen=True)
class JointTargets:
    """Which joints the joint families act on for one task (joint ids, not DOF ids).

    ``joints``: damping and friction loss act on these joints' DOFs. ``stiffness_joints``: the
    stiffness family sets these joints' stiffness, as a scale of the nominal one when
    ``stiffness_is_scale`` and as an absolute value otherwise; ``spring_reference``, when set, is
    written to their ``qpos_spring`` entries (``None`` keeps the nominal reference).
    """

    joints: tuple[int, ...]
    stiffness_joints: tuple[int, ...]
    stiffness_is_scale: bool = False
    spring_reference: float | None = None


JOINT_TARGETS: dict[str, JointTargets] = {
    "hopper": JointTargets(joints=(3, 4, 5), stiffness_joints=(3,), spring_reference=0.2),
    "halfcheetah": JointTargets(joints=(3, 4, 5, 6, 7, 8), stiffness_joints=(3, 4, 5), stiffness_is_scale=True),
    "walker2d": JointTargets(joints=(3, 4, 5, 6, 7, 8), stiffness_joints=(3, 4, 5, 6, 7, 8)),
    "ant": JointTargets(joints=(1, 2, 3, 4, 5, 6, 7, 8), stiffness_joints=(1, 2, 3, 4, 5, 6, 7, 8)),
    "inverted-pendulum": JointTargets(joints=(1,), stiffness_joints=(1,), spring_reference=0.1),
}

# Default sweep grids as (start, stop, step), both ends included. Gravity, damping, stiffness and
# actuator range on the MuJoCo tasks are DR-BC's grids; the other families use one grid for all four
# MuJoCo tasks (mass and friction in both directions, as in RRLS-style meshes).
_SHARED_GRIDS: dict[str, tuple[float, float, float]] = {
    "frictionloss": (0.0, 5.0, 0.5),
    "mass": (-0.3, 0.3, 0.1),
    "friction": (-0.5, 0.5, 0.1),
    "action_noise": (0.0, 0.3, 0.05),
}
_GRIDS: dict[str, dict[str, tuple[float, float, float]]] = {
    "hopper": {"gravity": (0.0, 0.2, 0.025), "damping": (0.0, 1.4, 0.2),
               "stiffness": (0.0, 120.0, 10.0), "actuator_range": (0.95, 1.0, 0.005), **_SHARED_GRIDS},
    "halfcheetah": {"gravity": (0.0, 0.4, 0.05), "damping": (0.0, 0.8, 0.1),
                    "stiffness": (0.0, 0.5, 0.1), "actuator_range": (0.6, 1.0, 0.05), **_SHARED_GRIDS},
    "walker2d": {"gravity": (0.0, 0.15, 0.025), "damping": (0.0, 1.4, 0.2),
                 "stiffness": (0.0, 50.0, 5.0), "actuator_range": (0.95, 1.0, 0.005), **_SHARED_GRIDS},
    "ant": {"gravity": (0.0, 0.15, 0.025), "damping": (0.0, 1.4, 0.2),
            "stiffness": (0.0, 50.0, 5.0), "actuator_range": (0.95, 1.0, 0.005), **_SHARED_GRIDS},
    # inverted-pendulum: grids reach from nominal to where the LQR expert (drorl.envs.scripted) fails;
    # its nominal control range is +-3 and its pole touches nothing, so friction is inert.
    "inverted-pendulum": {"gravity": (0.0, 4.0, 0.5), "damping": (0.0, 8.0, 1.0), "stiffness": (0.0, 20.0, 2.5),
                          "actuator_range": (0.5, 3.0, 0.5), "frictionloss": (0.0, 4.0, 0.5),
                          "mass": (-0.3, 0.3, 0.1), "friction": (-0.5, 0.5, 0.1), "action_noise": (0.0, 2.0, 0.25)},
    # cartpole (drorl.envs.cartpole): gravity and pole mass scaled by 1 + p, push force absolute.
    "cartpole": {"gravity": (0.0, 2.0, 0.25), "mass": (0.0, 4.0, 0.5), "actuator_range": (2.0, 10.0, 1.0)},
}


def default_grid(task: str | TaskInfo, family: str) -> list[float]:
    """The default sweep values of ``family`` on ``task`` (see the module docstring for their meaning)."""
    check_family(family)
    info = get_task(task)
    if family not in _GRIDS[info.name]:
        raise DrorlError(f"perturbation family {family!r} does not apply to {info.name}; "
                         f"expected one of {', '.join(_GRIDS[info.name])}")
    start, stop, step = _GRIDS[info.name][family]
    count = int(round((stop - start) / step)) + 1
    return [float(v) + 0.0 for v in np.round(start + step * np.arange(count), 6)]  # + 0.0 turns -0.0 into 0.0


def _range_values(item: str, family: str, bounds: str, option: str) -> tuple[float, ...]:
    """The values of ``family=LO:HI:N``: N evenly spaced from LO to HI, both included, each a valid value."""
    parts = bounds.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        low, high, count = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise DrorlError(f"{option} {item}: expected FAMILY=LO:HI:N with numbers LO and HI and a whole "
                         f"number N") from None
    if count < 1 or (count == 1 and low != high):
        raise DrorlError(f"{option} {item}: N must be at least 1 (exactly 1 only when LO equals HI)")
    values = tuple(float(v) + 0.0 for v in np.round(np.linspace(low, high, count), 12))  # + 0.0: no -0.0
    try:
        for value in values:
            Perturbation(family, value)
    except DrorlError as exc:
        raise DrorlError(f"{option} {item}: {exc}") from None
    return values


def parse_sweep(text: str, option: str = "--sweep") -> dict[str, tuple[float, ...] | None]:
    """Parse a sweep spec such as ``"gravity=-0.3:0.3:7,damping"``: each family with its values.

    ``FAMILY=LO:HI:N`` sweeps N evenly spaced values from LO to HI, both included (LO > HI: a
    decreasing grid); a bare ``FAMILY`` maps to ``None``, the task's ``default_grid``. Values mean
    what they mean in the family (the module docstring's table). ``option`` names the spec in errors.
    """
    spec: dict[str, tuple[float, ...] | None] = {}
    for item in (item.strip() for item in str(text).split(",")):
        if not item:
            continue
        family, _, bounds = (part.strip() for part in item.partition("="))
        if family not in FAMILIES:
            raise DrorlError(f"{option} {item}: unknown perturbation family {family!r}; expected one of "
                             f"{', '.join(FAMILIES)}")
        values = _range_values(item, family, bounds, option) if "=" in item else None
        if family in spec and spec[family] != values:
            raise DrorlError(f"{option} {text}: {family} is given twice with different grids")
        spec[family] = values
    if not spec:
        raise DrorlError(f"{option} {text}: no perturbation family given; expected FAMILY or FAMILY=LO:HI:N, "
                         f"comma-separated, with FAMILY one of {', '.join(FAMILIES)}")
    return spec


def parse_families(text: str) -> list[str]:
    """Parse a comma-separated list of family names (``"gravity,damping"``), dropping repeats."""
    names = [name.strip() for name in str(text).split(",") if name.strip()]
    if not names:
        raise DrorlError(f"no perturbation family given; expected a comma-separated list of {', '.join(FAMILIES)}")
    for name in names:
        check_family(name)
    return list(dict.fromkeys(names))


def model_field(model: Any, field: str) -> np.ndarray:
    """The live (writable) array behind ``field`` of a MuJoCo model."""
    return model.opt.gravity if field == "opt.gravity" else getattr(model, field)


def nominal_fields(model: Any) -> Mapping[str, np.ndarray]:
    """Read-only copies of ``model``'s ``MODEL_FIELDS``, keyed by field name."""
    nominal = {field: model_field(model, field).copy() for field in MODEL_FIELDS}
    for array in nominal.values():
        array.setflags(write=False)
    return MappingProxyType(nominal)


def check_perturbation(task: str | TaskInfo, perturbation: AnyPerturbation | None) -> None:
    """Raise a ``DrorlError`` if ``perturbation`` cannot apply to ``task`` (a negative absolute stiffness)."""
    info = get_task(task)
    for part in components(perturbation):
        if part.family == "stiffness" and not JOINT_TARGETS[info.name].stiffness_is_scale and part.value < 0:
            raise DrorlError(f"perturbation {part.label}: {info.name} stiffness is absolute, must be >= 0")


def apply_perturbation(
    model: Any, nominal: Mapping[str, np.ndarray], task: str | TaskInfo, perturbation: AnyPerturbation | None,
) -> None:
    """Write the ``nominal`` fields, then every part of ``perturbation`` (``None``: nominal), into the
    MuJoCo ``model``.

    ``nominal`` holds the task model's ``MODEL_FIELDS`` as ``nominal_fields`` returns them. Action
    noise changes no model field (see ``noisy_action``).
    """
    for field, value in nominal.items():
        np.copyto(model_field(model, field), value)
    targets = JOINT_TARGETS[get_task(task).name]
    for part in components(perturbation):
        _write_family(model, nominal, targets, part)


def _write_family(model: Any, nominal: Mapping[str, np.ndarray], targets: JointTargets,
                  perturbation: Perturbation) -> None:
    """Write one family's perturbation into ``model``, from the ``nominal`` fields."""
    v = perturbation.value
    joint_dofs = model.jnt_dofadr[list(targets.joints)]
    if perturbation.family == "gravity":
        model.opt.gravity[2] = nominal["opt.gravity"][2] * (1.0 + v)
    elif perturbation.family == "damping":
        model.dof_damping[joint_dofs] = nominal["dof_damping"][joint_dofs] * (1.0 + v)
    elif perturbation.family == "stiffness":
        joints = list(targets.stiffness_joints)
        scaled = nominal["jnt_stiffness"][joints] * (1.0 + v)
        model.jnt_stiffness[joints] = scaled if targets.stiffness_is_scale else v
        if targets.spring_reference is not None:
            model.qpos_spring[model.jnt_qposadr[joints]] = targets.spring_reference
    elif perturbation.family == "actuator_range":
        model.actuator_ctrlrange[:] = (-v, v)
        model.actuator_ctrllimited[:] = 1
    elif perturbation.family == "frictionloss":
        model.dof_frictionloss[joint_dofs] = v
    elif perturbation.family == "mass":
        model.body_mass[1:] = nominal["body_mass"][1:] * (1.0 + v)
    elif perturbation.family == "friction":
        model.geom_friction[:, 0] = nominal["geom_friction"][:, 0] * (1.0 + v)


def action_noise_generator(reset_seed: int) -> np.random.Generator:
    """The action-noise random stream of an episode reset with ``reset_seed``."""
    return np.random.default_rng([_NOISE_STREAM, reset_seed])


def noisy_action(
    action: np.ndarray, perturbation: AnyPerturbation | None, rng: np.random.Generator, low: np.ndarray,
    high: np.ndarray,
) -> np.ndarray:
    """``action`` with the ``action_noise`` perturbation's Gaussian noise, clipped to ``[low, high]`` (float32).

    A perturbation without an action-noise part (or none, or zero variance) returns ``action``
    unchanged and draws nothing.
    """
    variance = action_noise_variance(perturbation)
    if variance <= 0:
        return action
    noisy = np.asarray(action) + rng.normal(0.0, math.sqrt(variance), np.shape(action))
    return np.clip(noisy, low, high).astype(np.float32)


class PerturbedEnv(gymnasium.Wrapper):
    """A MuJoCo Gymnasium env whose dynamics carry one ``Perturbation`` (or none), reset-safe.

    ``set_perturbation`` writes the perturbation into the model at once and every ``reset`` writes
    nominal values back and applies it again, so the model never drifts. ``restore_nominal`` writes
    the nominal values back (the perturbation stays selected for the next reset); ``close`` does
    the same before closing. Action noise draws from a generator seeded by ``reset(seed=...)``.
    """

    def __init__(self, env: gymnasium.Env, task: str | TaskInfo, perturbation: AnyPerturbation | None = None):
        super().__init__(env)
        self.task = get_task(task)
        self._nominal = nominal_fields(env.unwrapped.model)
        self._perturbation: AnyPerturbation | None = None
        self._noise_rng = np.random.default_rng()
        self.set_perturbation(perturbation)

    @property
    def nominal(self) -> Mapping[str, np.ndarray]:
        """Read-only copies of the nominal model fields, keyed by ``MODEL_FIELDS`` names."""
        return self._nominal

    @property
    def perturbation(self) -> AnyPerturbation | None:
        """The perturbation applied at every reset (``None``: nominal dynamics)."""
        return self._perturbation

    def set_perturbation(self, perturbation: AnyPerturbation | None) -> None:
        """Select ``perturbation`` (``None`` for nominal) and write it into the model now."""
        check_perturbation(self.task, perturbation)
        self._perturbation = perturbation
        self._write_model()

    def restore_nominal(self) -> None:
        """Write every nominal model field back (the selected perturbation returns at the next reset)."""
        apply_perturbation(self.env.unwrapped.model, self._nominal, self.task, None)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Restore nominal dynamics, apply the perturbation, then reset the wrapped env."""
        if seed is not None:
            self._noise_rng = action_noise_generator(seed)
        self._write_model()
        return self.env.reset(seed=seed, options=options)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict]:
        """Step the wrapped env, adding Gaussian action noise (clipped to the action space) if selected."""
        space = self.action_space
        return self.env.step(noisy_action(action, self._perturbation, self._noise_rng, space.low, space.high))

    def close(self) -> None:
        """Restore nominal dynamics, then close the wrapped env."""
        self.restore_nominal()
        super().close()

    def _write_model(self) -> None:
        """Write nominal values, then the selected perturbation, into the MuJoCo model."""
        apply_perturbation(self.env.unwrapped.model, self._nominal, self.task, self._perturbation)
