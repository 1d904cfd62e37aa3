"""The online loop's uniform warm-up actions go through the algorithm's ``executed_action`` (DSRL's safety
layer), so the replay buffer holds only actions the method executes; without a layer the warm-up is the
uniform draw it always was."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from drorl import checkpoint
from drorl.algos import ddpg, dsrl
from drorl.data import buffer as buffer_lib
from drorl.envs import safety
from drorl.envs.policies import random_policy
from drorl.online import OnlineSettings, train_online

TASK = safety.get_safety_task("safe-unicycle")
STEPS = 300  # three episodes: the first layout keeps the random walk clear of obstacles
# no update ever runs (the warm-up outlasts the run): the state that acted is the one returned
SETTINGS = OnlineSettings(env_steps=STEPS, start_steps=2 * STEPS, update_every=50, buffer_size=STEPS,
                          eval_every=0, checkpoint_every=STEPS)
TINY = ddpg.Config(hidden_dims=(8,), batch_size=8)


def _warmup(algo: str, config, out: Path):
    """Run the warm-up only; the state and the replay buffer's rows (observations, actions) it filled."""
    state, run_dir = train_online(algo, "safe-unicycle", out, SETTINGS, config, progress=False)
    target = {"buffer": buffer_lib.empty(STEPS, TASK.obs_dim, TASK.act_dim, extra=("costs",))}
    _, saved = checkpoint.load(checkpoint.latest(run_dir / "checkpoints"), target)
    columns = saved["buffer"].columns
    return state, np.asarray(columns["observations"]), np.asarray(columns["actions"])


@pytest.mark.parametrize("overrides", [{"layer": "nominal"}, {"layer": "robust", "adversary": "margin"}],
                         ids=["nominal", "robust-margin"])
def test_warmup_actions_are_the_layers_outputs(tmp_path, overrides):
    """Every stored warm-up action meets the layer's CBF rows at its state up to the slack, and the layer
    leaves it where it is; the uniform draws themselves break those rows at many of the same states."""
    config = dsrl.Config(ddpg=TINY, **overrides)
    state, obs, actions = _warmup("dsrl", config, tmp_path)
    rows = dsrl.guarded_rows(TASK, config, jnp.asarray(obs), jnp.mean(state.nominal_samples + state.delta, axis=0))
    margins = jnp.einsum("bkn,bn->bk", rows.A, actions) - rows.b
    assert float(jnp.min(margins)) > -1e-3
    np.testing.assert_allclose(dsrl.executed_action(state, jnp.asarray(obs), jnp.asarray(actions)), actions,
                               atol=1e-4)
    explore = random_policy("safe-unicycle", 0)
    uniform = np.concatenate([explore(obs[:1]) for _ in range(STEPS)])
    raw_margins = jnp.einsum("bkn,bn->bk", rows.A, uniform) - rows.b
    assert float(jnp.mean(jnp.min(raw_margins, axis=-1) < -1e-3)) > 0.1


def test_warmup_without_a_layer_is_the_uniform_draw(tmp_path):
    """DDPG (no hook) and DSRL with layer "none" store the seeded uniform actions bit for bit, at the
    same states."""
    _, ddpg_obs, ddpg_actions = _warmup("ddpg", TINY, tmp_path / "ddpg")
    _, none_obs, none_actions = _warmup("dsrl", dsrl.Config(ddpg=TINY, layer="none"), tmp_path / "none")
    explore = random_policy("safe-unicycle", 0)
    uniform = np.concatenate([explore(ddpg_obs[:1]) for _ in range(STEPS)])
    np.testing.assert_array_equal(ddpg_actions, uniform)
    np.testing.assert_array_equal(none_actions, uniform)
    np.testing.assert_array_equal(none_obs, ddpg_obs)
