"""A ring buffer of transitions that lives inside a pytree: the online loop's replay buffer, and a
store an algorithm can keep in its own state and sample inside a compiled program.

``insert`` and ``sample`` are pure and jittable; the buffer's arrays are donated by the callers that
own it, so an insert does not copy the whole buffer.
"""

from __future__ import annotations

from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp

TRANSITION_COLUMNS = ("observations", "actions", "rewards", "next_observations", "terminals")


@flax.struct.dataclass
class RingBuffer:
    """``columns`` share a leading capacity axis; ``size`` rows are filled; the next write goes to ``cursor``."""

    columns: dict[str, jax.Array]
    size: jax.Array
    cursor: jax.Array

    @property
    def capacity(self) -> int:
        return next(iter(self.columns.values())).shape[0]


def empty(capacity: int, obs_dim: int, act_dim: int, extra: Sequence[str] = ()) -> RingBuffer:
    """Room for ``capacity`` transitions (float32); ``extra`` adds scalar columns, e.g. ``("costs",)``."""
    columns = {"observations": jnp.zeros((capacity, obs_dim), jnp.float32),
               "actions": jnp.zeros((capacity, act_dim), jnp.float32),
               "rewards": jnp.zeros((capacity,), jnp.float32),
               "next_observations": jnp.zeros((capacity, obs_dim), jnp.float32),
               "terminals": jnp.zeros((capacity,), jnp.float32)}
    columns.update({name: jnp.zeros((capacity,), jnp.float32) for name in extra})
    return RingBuffer(columns, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def insert(buffer: RingBuffer, rows: dict[str, jax.Array], valid: jax.Array | None = None) -> RingBuffer:
    """Write ``rows`` (every column, same leading length) at the cursor, overwriting the oldest.

    With ``valid`` (a boolean mask over the rows) only the valid rows are written, contiguously and in
    order, and the cursor advances by their number: a fixed-shape program (model rollouts, some of
    which have terminated) stores a variable number of rows without touching any other row.
    """
    capacity = buffer.capacity
    count = next(iter(rows.values())).shape[0]
    if valid is None:
        index, written = (buffer.cursor + jnp.arange(count)) % capacity, count
    else:
        rank = jnp.cumsum(valid) - 1
        index = jnp.where(valid, (buffer.cursor + rank) % capacity, capacity)  # capacity: out of range, dropped
        written = jnp.sum(valid, dtype=jnp.int32)
    columns = {k: v.at[index].set(rows[k].astype(v.dtype), mode="drop") for k, v in buffer.columns.items()}
    return RingBuffer(columns, jnp.minimum(buffer.size + written, capacity), (buffer.cursor + written) % capacity)


def sample(buffer: RingBuffer, key: jax.Array, batch_size: int) -> dict[str, jax.Array]:
    """``batch_size`` rows drawn uniformly from the filled part."""
    rows = jax.random.randint(key, (batch_size,), 0, buffer.size)
    return {k: v[rows] for k, v in buffer.columns.items()}
