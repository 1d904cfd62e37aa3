import os
import shutil
import tempfile

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite compiles more than it executes (tiny data, few steps), and many tests compile the same
# programs: a compilation cache shared by the xdist workers (and, through the environment, the CLI
# subprocesses and Ray workers) saves about a sixth of its time. It lives for one session, so a clean run
# stays a cold run. (XLA's lower backend optimisation levels would save more but produced NaN in BC's loss
# and in the QP layer's solutions.)
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="drorl-tests-xla-cache-")
    os.environ["DRORL_TESTS_CACHE_OWNER"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

from drorl.data.dataset import Dataset  # noqa: E402


def make_arrays(n: int = 300, obs_dim: int = 4, act_dim: int = 1, episode_len: int = 50, seed: int = 0):
    """Synthetic D4RL arrays: actions a linear-tanh function of the observations, fixed-length episodes."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    weights = rng.normal(size=(obs_dim, act_dim)).astype(np.float32)
    actions = np.tanh(0.5 * obs @ weights).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[episode_len - 1::episode_len] = True
    terminals = np.zeros(n, bool)
    return {"observations": obs, "actions": actions, "rewards": rng.normal(size=n).astype(np.float32),
            "next_observations": np.roll(obs, -1, axis=0), "terminals": terminals, "timeouts": timeouts}


@pytest.fixture
def small_dataset() -> Dataset:
    return Dataset.from_arrays(make_arrays(), metadata={"env": "inverted-pendulum", "kind": "synthetic"})


@pytest.fixture
def float64():
    """Double precision for the exact (tabular) checks, restored afterwards."""
    import jax

    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    """Every test gets its own $DRORL_DATA so nothing touches the user's cache."""
    monkeypatch.setenv("DRORL_DATA", str(tmp_path / "drorl-data"))


def pytest_unconfigure(config):
    """The process that made the session's compilation cache removes it."""
    if os.environ.get("DRORL_TESTS_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
