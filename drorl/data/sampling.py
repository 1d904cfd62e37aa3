"""Batches drawn inside a compiled program from a dataset held on the device.

``device_arrays`` lays a :class:`~drorl.data.dataset.Dataset` out as device arrays: per-row arrays
(one entry per transition) and per-episode arrays (``EPISODE_KEYS``: first pair, start row, length).
Two samplers read it: ``uniform_batch`` (rows uniformly: the time-averaged occupancy of the data) and
``discounted_batch`` (rows from the discounted occupancy of the demonstrating policy, each episode
weighted equally). ``discounted_occupancy`` gives the latter's exact row probabilities, for tests and
for estimators that take expectations by summation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from drorl.data.dataset import Dataset

EPISODE_KEYS = ("initial_observations", "initial_actions", "episode_starts", "episode_lengths")


def device_arrays(dataset: Dataset) -> dict[str, jax.Array]:
    """Everything an update may sample, as device arrays (one copy, shared by all seeds)."""
    return {
        "observations": jnp.asarray(dataset.observations),
        "actions": jnp.asarray(dataset.actions),
        "rewards": jnp.asarray(dataset.rewards),
        "next_observations": jnp.asarray(dataset.next_observations),
        "terminals": jnp.asarray(dataset.terminals, jnp.float32),
        "timeouts": jnp.asarray(dataset.timeouts, jnp.float32),
        "next_actions": jnp.asarray(dataset.next_actions),
        "has_next_action": jnp.asarray(dataset.has_next_action, jnp.float32),
        "time_steps": jnp.asarray(dataset.time_steps, jnp.float32),
        "initial_observations": jnp.asarray(dataset.initial_observations),
        "initial_actions": jnp.asarray(dataset.initial_actions),
        "episode_starts": jnp.asarray(dataset.episode_starts, jnp.int32),
        "episode_lengths": jnp.asarray(dataset.episode_lengths, jnp.int32),
    }


def _rows_and_initial_pairs(data: dict[str, jax.Array], rows: jax.Array, init_episodes: jax.Array
                            ) -> dict[str, jax.Array]:
    batch = {k: v[rows] for k, v in data.items() if k not in EPISODE_KEYS}
    batch["initial_observations"] = data["initial_observations"][init_episodes]
    batch["initial_actions"] = data["initial_actions"][init_episodes]
    return batch


def uniform_batch(data: dict[str, jax.Array], key: jax.Array, batch_size: int) -> dict[str, jax.Array]:
    """Uniform transitions, plus uniformly drawn episode-initial pairs (same batch size).

    Unused fields cost nothing: XLA drops the gathers whose results no update reads.
    """
    k_rows, k_init = jax.random.split(key)
    rows = jax.random.randint(k_rows, (batch_size,), 0, data["rewards"].shape[0])
    init_episodes = jax.random.randint(k_init, (batch_size,), 0, data["initial_observations"].shape[0])
    return _rows_and_initial_pairs(data, rows, init_episodes)


def truncated_geometric(key: jax.Array, lengths: jax.Array, gamma: float) -> jax.Array:
    """t in [0, T) with P(t) = (1 - g) g^t / (1 - g^T), by inverting its distribution function
    P(t <= k) = (1 - g^(k+1)) / (1 - g^T) (one uniform draw per sample, O(1) each)."""
    u = jax.random.uniform(key, lengths.shape)
    mass = 1.0 - jnp.power(gamma, lengths.astype(jnp.float32))
    t = jnp.floor(jnp.log1p(-u * mass) / jnp.log(gamma)).astype(jnp.int32)
    return jnp.clip(t, 0, lengths - 1)


def discounted_batch(data: dict[str, jax.Array], key: jax.Array, batch_size: int, gamma: float
                     ) -> dict[str, jax.Array]:
    """Transitions from the empirical discounted occupancy: episode i uniformly, then its step t with
    probability (1 - g) g^t / (1 - g^T_i), so row (i, t) has probability (1 - g) g^t / (N (1 - g^T_i)).

    Sampling rather than weighting a uniform batch: the weights span g^0 / g^(T-1) (about 2e4 for
    T = 1000, g = 0.99), so a weighted uniform batch would have an effective size of a few percent of
    its rows. Also returns, per row, the first pair of its episode (``restart_observations``,
    ``restart_actions``: where the occupancy's mass goes after the episode's last row) and
    episode-initial pairs drawn uniformly over episodes (the initial-state term).
    """
    k_episode, k_step, k_init = jax.random.split(key, 3)
    episodes = jax.random.randint(k_episode, (batch_size,), 0, data["episode_starts"].shape[0])
    steps = truncated_geometric(k_step, data["episode_lengths"][episodes], gamma)
    init_episodes = jax.random.randint(k_init, (batch_size,), 0, data["initial_observations"].shape[0])
    batch = _rows_and_initial_pairs(data, data["episode_starts"][episodes] + steps, init_episodes)
    batch["restart_observations"] = data["initial_observations"][episodes]
    batch["restart_actions"] = data["initial_actions"][episodes]
    return batch


def every_row(data: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Every row as one batch, with its episode's first pair as ``restart_*`` and the episodes'
    initial pairs as the initial-state term (diagnostics and exact checks)."""
    rows = jnp.arange(data["rewards"].shape[0])
    episodes = jnp.searchsorted(data["episode_starts"], rows, side="right") - 1
    batch = _rows_and_initial_pairs(data, rows, jnp.arange(data["initial_observations"].shape[0]))
    batch["restart_observations"] = data["initial_observations"][episodes]
    batch["restart_actions"] = data["initial_actions"][episodes]
    return batch


def discounted_occupancy(dataset: Dataset, gamma: float) -> np.ndarray:
    """Exact row probabilities of ``discounted_batch``: (1 - g) g^t / (N (1 - g^T_i)), float64."""
    lengths = dataset.episode_lengths[dataset.episode_index].astype(np.float64)
    steps = dataset.time_steps.astype(np.float64)
    return (1.0 - gamma) * gamma**steps / (dataset.num_episodes * (1.0 - gamma**lengths))
