"""CartPole-v1 with dynamics perturbations, for the discrete-action (Stackelberg) experiments.

Families: ``gravity`` (scale ``1 + p``), ``mass`` (pole mass scale ``1 + p``) and ``actuator_range``
(the push force, absolute; nominal 10 N), alone or combined. Like ``PerturbedEnv`` the wrapper writes nominal values
back and re-applies the perturbation on every reset, and ``close`` restores nominal. Actions come in
as one float column (``[1.0]``) as everywhere in drorl and are passed on as the integer action.
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium
import numpy as np

from drorl.envs.perturbations import AnyPerturbation, components
from drorl.errors import DrorlError

CARTPOLE_FAMILIES = ("gravity", "mass", "actuator_range")
_FIELDS = ("gravity", "masspole", "force_mag", "length")


class CartPolePerturbedEnv(gymnasium.Wrapper):
    def __init__(self, env: gymnasium.Env, perturbation: AnyPerturbation | None = None):
        super().__init__(env)
        self.task = "cartpole"
        self._nominal = {name: float(getattr(env.unwrapped, name)) for name in _FIELDS}
        self._perturbation: AnyPerturbation | None = None
        self.set_perturbation(perturbation)

    @property
    def nominal(self) -> Mapping[str, float]:
        return dict(self._nominal)

    @property
    def perturbation(self) -> AnyPerturbation | None:
        return self._perturbation

    def set_perturbation(self, perturbation: AnyPerturbation | None) -> None:
        for part in components(perturbation):
            if part.family not in CARTPOLE_FAMILIES:
                raise DrorlError(f"perturbation family {part.family!r} does not apply to cartpole; "
                                 f"expected one of {', '.join(CARTPOLE_FAMILIES)}")
        self._perturbation = perturbation
        self._write()

    def restore_nominal(self) -> None:
        cartpole = self.env.unwrapped
        for name, value in self._nominal.items():
            setattr(cartpole, name, value)
        self._derive()

    def _derive(self) -> None:
        cartpole = self.env.unwrapped
        cartpole.total_mass = cartpole.masspole + cartpole.masscart
        cartpole.polemass_length = cartpole.masspole * cartpole.length

    def _write(self) -> None:
        self.restore_nominal()
        cartpole = self.env.unwrapped
        for p in components(self._perturbation):
            if p.family == "gravity":
                cartpole.gravity = self._nominal["gravity"] * (1.0 + p.value)
            elif p.family == "mass":
                cartpole.masspole = self._nominal["masspole"] * (1.0 + p.value)
            else:
                cartpole.force_mag = p.value
        self._derive()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._write()
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        return self.env.step(int(np.asarray(action).reshape(-1)[0]))

    def close(self) -> None:
        self.restore_nominal()
        super().close()
