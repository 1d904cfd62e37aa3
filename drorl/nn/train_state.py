"""The one train-state type: parameters, optimiser state and the (static) optimiser that steps them.

Every algorithm's state holds named train states (``policy``, ``critic``, ``q``, ``vae``,
``dynamics``, ...). ``gradient_step`` is the only place in drorl where a loss's gradient is taken and
applied; a caller that computes its gradient otherwise (a total derivative, a masked or projected
gradient) hands it to ``apply_gradients``.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import optax


@flax.struct.dataclass
class TrainState:
    """``params`` and ``opt_state`` are pytree leaves (checkpointed); ``optimizer`` is static."""

    params: Any
    opt_state: Any
    optimizer: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, params: Any, optimizer: optax.GradientTransformation) -> "TrainState":
        return cls(params=params, opt_state=optimizer.init(params), optimizer=optimizer)

    def apply_gradients(self, grads: Any) -> "TrainState":
        updates, opt_state = self.optimizer.update(grads, self.opt_state, self.params)
        return self.replace(params=optax.apply_updates(self.params, updates), opt_state=opt_state)


def gradient_step(train_state: TrainState, loss_fn: Callable[..., Any], *args: Any,
                  has_aux: bool = False) -> tuple[TrainState, Any, Any]:
    """One optimiser step on ``loss_fn(params, *args)``: returns (new train state, loss output, grads).

    The loss output is ``loss`` or, with ``has_aux``, ``(loss, aux)``, as ``jax.value_and_grad`` gives it.
    """
    output, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(train_state.params, *args)
    return train_state.apply_gradients(grads), output, grads
