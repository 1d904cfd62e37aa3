"""Off-policy evaluation: the value of any JAX policy estimated from fixed data by DualDICE."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import jax

from drorl.algos import dualdice
from drorl.algos.base import Spec
from drorl.data.dataset import Dataset
from drorl.errors import DrorlError
from drorl.progress import progress_bar
from drorl.train import device_data, init_states, make_train_chunk


def for_target_policy(target_policy: dualdice.TargetPolicy) -> SimpleNamespace:
    """An update for the training loop (``drorl.train.make_train_chunk``) that samples ``target_policy``
    inside the compiled program."""
    return SimpleNamespace(
        update=lambda state, batch, key: dualdice.update_for_policy(state, batch, key, target_policy))


def estimate_policy_value(dataset: Dataset, target_policy: dualdice.TargetPolicy,
                          config: dualdice.Config = dualdice.Config(), steps: int = 100_000, seed: int = 0,
                          spec: Spec | None = None, updates_per_call: int = 1000,
                          progress: bool = False) -> tuple[float, dualdice.State]:
    """Off-policy evaluation: DualDICE fitted on ``dataset`` (initial states: first state of each episode)
    for ``target_policy``; returns the normalised discounted value E_D[w r] / (1 - g) over the whole
    dataset, and the fitted state (``ratio`` gives w(s, a)).

    The value is E_{s0}[sum_t g^t r_t]. With a fixed budget the learning rates decay to 0 over ``steps``
    (cosine) unless ``config.lr_decay_steps`` is set; ``steps`` rounds up to whole calls of
    ``updates_per_call`` updates.
    """
    if steps < 1:
        raise DrorlError(f"steps={steps}: expected a positive number of DualDICE updates")
    chunk_size, calls = min(updates_per_call, steps), -(-steps // min(updates_per_call, steps))
    if config.lr_decay_steps == 0:
        config = dataclasses.replace(config, lr_decay_steps=chunk_size * calls)
    spec = spec or Spec.from_dataset(dataset)
    data = device_data(dataset)
    states, rngs = init_states(dualdice, config, spec, [seed])
    chunk = make_train_chunk(for_target_policy(target_policy), chunk_size)
    with progress_bar("DualDICE", chunk_size * calls, enabled=progress, unit="updates") as advance:
        for _ in range(calls):
            states, rngs, _ = chunk(states, rngs, data)
            advance(chunk_size)
    state = jax.tree_util.tree_map(lambda x: x[0], states)
    weights = jax.jit(dualdice.ratio)(state, data["observations"], data["actions"])
    return float(dualdice.value_estimate(weights, data["rewards"], config.gamma)), state
