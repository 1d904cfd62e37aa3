"""DSRL and its baselines (issue 19): gradients through the layer, safety of the nominal layer, the
robust layer's worst-case margin, the adversary's ball, and layer "none" being DDPG."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drorl.algos import ddpg, dsrl
from drorl.algos.base import Scaler
from drorl.envs import safety
from drorl.errors import DrorlError
from drorl.nn.critics import Critic
from drorl.online import online_spec

TASK = safety.TASKS["unicycle"]
SPEC = online_spec("safe-unicycle")
SMALL = ddpg.Config(hidden_dims=(16, 16), batch_size=8)


def _near_obstacle(key: jax.Array) -> jnp.ndarray:
    """A unicycle whose look-ahead point is 0.05 outside the first obstacle's guarded radius, heading at
    it (the layer's row for that obstacle binds for a forward action); the other obstacles moved away."""
    env_state, _ = safety.reset(TASK, key)
    theta = env_state.state[2]
    heading = jnp.stack([jnp.cos(theta), jnp.sin(theta)])
    guarded = env_state.radii[0] + TASK.cbf_buffer + TASK.lookahead
    p = env_state.centres[0] - (guarded + 0.05 + TASK.lookahead) * heading
    centres = env_state.centres.at[1:].add(100.0)
    return safety.observe(TASK, env_state.replace(state=env_state.state.at[:2].set(p), centres=centres))


NEAR = jax.jit(jax.vmap(_near_obstacle))(jax.random.split(jax.random.PRNGKey(3), 8))  # [8, obs_dim]


def test_actor_loss_gradient_through_the_layer_matches_finite_differences(float64):
    """d/d(u_RL, delta) of -mean Q(s, u*(u_RL, s, mean(xi0 + delta))) by JAX (KKT of the QP) equals
    central differences, with the layer active."""
    config = dsrl.Config(layer="robust")
    scaler = Scaler.from_spec(SPEC)
    obs = NEAR.astype(jnp.float64)
    critic = Critic((16,), activation="tanh")  # smooth, so that differences converge
    critic_params = critic.init(jax.random.PRNGKey(0), obs, jnp.zeros((8, 2)))
    nominal = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (3, 2), jnp.float64)

    def loss(unit, delta):
        executed = dsrl.safe_unit_action(TASK, config, scaler, nominal, delta, obs, unit)
        return ddpg.actor_loss(critic.apply(critic_params, obs, executed)), executed

    # one compiled program gives the loss (for the differences), the gradients and the executed action
    loss_and_grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    unit = jnp.tile(jnp.array([0.6, 0.2]), (8, 1)) + 0.1 * jax.random.normal(jax.random.PRNGKey(2), (8, 2))
    delta = 0.05 * jax.random.normal(jax.random.PRNGKey(4), (3, 2), jnp.float64)
    (_, executed), grads = loss_and_grads(unit, delta)
    assert float(jnp.max(jnp.abs(executed - unit))) > 0.1, "the layer should be active on these states"
    assert float(jnp.max(jnp.abs(grads[1]))) > 1e-4, "the loss should depend on the disturbance"
    eps = 1e-6
    for arg, grad in zip((unit, delta), grads):
        numeric = np.zeros(arg.shape)
        for index in np.ndindex(arg.shape):
            step = jnp.zeros(arg.shape).at[index].set(eps)
            args_plus = (arg + step, delta) if arg is unit else (unit, arg + step)
            args_minus = (arg - step, delta) if arg is unit else (unit, arg - step)
            numeric[index] = (float(loss_and_grads(*args_plus)[0][0])
                              - float(loss_and_grads(*args_minus)[0][0])) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-7)


def _go_to_goal(obs: jnp.ndarray) -> jnp.ndarray:
    """A scripted unicycle policy: full speed, turning towards the goal; blind to obstacles."""
    own, goal, _, _ = safety.split_observation(TASK, obs)
    error = jnp.arctan2(goal[..., 1], goal[..., 0]) - jnp.arctan2(own[..., 3], own[..., 2])
    error = jnp.arctan2(jnp.sin(error), jnp.cos(error))
    return jnp.stack([jnp.ones_like(error), jnp.clip(3.0 * error, -1.0, 1.0)], axis=-1)


def test_the_nominal_layer_keeps_a_scripted_unicycle_safe():
    """Under the nominal disturbance the go-to-goal script enters obstacles in most episodes on its own and
    in none through the nominal layer (batched rollouts of ``safety.rollouts``)."""
    scaler = Scaler.from_spec(SPEC)
    nominal = TASK.nominal_std * jax.random.normal(jax.random.PRNGKey(9), (32, 2))
    keys = jax.random.split(jax.random.PRNGKey(0), 16)

    def guarded(config):
        def policy(obs, key):
            unit = dsrl.safe_unit_action(TASK, config, scaler, nominal, jnp.zeros_like(nominal), obs, _go_to_goal(obs))
            return scaler.from_unit_action(unit)

        return jax.jit(lambda: safety.rollouts(TASK, policy, keys))()

    alone, layered = guarded(dsrl.Config(layer="none")), guarded(dsrl.Config(layer="nominal"))
    assert float(jnp.mean(alone.violated)) > 0.3
    assert not bool(jnp.any(layered.violated)) and float(jnp.sum(layered.violating_fraction)) == 0.0
    # the episode records agree with themselves: a violating fraction exactly where violated
    np.testing.assert_array_equal(alone.violating_fraction > 0, alone.violated)
    assert bool(jnp.all((alone.lengths == TASK.max_steps) | alone.reached))


def test_the_robust_layer_meets_the_worst_case_rows_that_the_nominal_one_misses():
    """With the closed-form adversary the executed action keeps every row's worst expected margin over the
    W1 ball, min_i (A_i u - b_i + rho ||c_i||) >= 0 with b at the nominal mean (spec, Corrections), and
    that margin is never below the nominal layer's, which is negative where its row binds."""
    scaler = Scaler.from_spec(SPEC)
    obs = NEAR
    nominal = TASK.nominal_std * jax.random.normal(jax.random.PRNGKey(9), (32, 2))
    unit = jnp.tile(jnp.array([0.8, 0.0]), (8, 1))
    robust = dsrl.Config(layer="robust", adversary="margin", radius=0.2)

    @jax.jit
    def worst_margins():
        rows = safety.cbf_rows(TASK, obs, jnp.mean(nominal, axis=0))
        tightening = robust.radius * jnp.linalg.norm(rows.disturbance_coeff, axis=-1)

        def margin(config):
            u = dsrl.safe_unit_action(TASK, config, scaler, nominal, jnp.zeros_like(nominal), obs, unit)
            executed = scaler.from_unit_action(u)
            return jnp.min(jnp.einsum("bkn,bn->bk", rows.A, executed) - rows.b - tightening, axis=-1)

        return margin(dsrl.Config(layer="nominal")), margin(robust)

    nominal_margin, robust_margin = worst_margins()
    assert float(jnp.min(robust_margin)) > -1e-2
    assert bool(jnp.all(robust_margin >= nominal_margin - 1e-3))
    assert float(jnp.max(nominal_margin)) < 0.0


def _batch(obs: jnp.ndarray) -> dict:
    n = obs.shape[0]
    actions = jax.random.uniform(jax.random.PRNGKey(5), (n, 2), minval=-1.0, maxval=1.0)
    return {"observations": obs, "actions": actions, "rewards": jnp.linspace(0.0, 1.0, n),
            "next_observations": obs, "terminals": jnp.zeros(n)}


def _driving_forward(state: dsrl.State) -> dsrl.State:
    """``state`` with an actor that outputs (0.8, 0) everywhere (zero last-layer weights)."""
    params = state.agent.actor.params
    last = f"Dense_{len(SMALL.hidden_dims)}"
    layer = {"kernel": jnp.zeros_like(params["params"]["MLP_0"][last]["kernel"]),
             "bias": jnp.array([jnp.arctanh(0.8), 0.0])}
    params = {"params": {"MLP_0": {**params["params"]["MLP_0"], last: layer}}}
    return state.replace(agent=ddpg.with_policy_params(state.agent, params))


def test_the_adversary_moves_inside_the_wasserstein_ball():
    """DSRL updates on states where the layer binds: the transport is ascended (it moves) and stays in the
    W1 ball mean_i ||delta_i|| <= rho; a large step puts it on the ball's boundary."""
    config = dsrl.Config(ddpg=SMALL, radius=0.2, ascent_step=1e3, num_samples=8)
    state = _driving_forward(dsrl.init(config, SPEC, jax.random.PRNGKey(0)))
    batch = _batch(NEAR)
    update = jax.jit(dsrl.update)
    for i in range(3):
        state, metrics = update(state, batch, jax.random.PRNGKey(i))
        transport = float(jnp.mean(jnp.linalg.norm(state.delta, axis=-1)))
        assert transport <= config.radius + 1e-5
        assert float(metrics["transport_mean"]) == pytest.approx(transport, rel=1e-5)
    assert transport == pytest.approx(config.radius, rel=1e-3)


def test_layer_none_is_ddpg():
    """The "none" baseline is DDPG itself: the same parameters after an update from the same state and
    batch, and the same actions."""
    state = dsrl.init(dsrl.Config(ddpg=SMALL, layer="none"), SPEC, jax.random.PRNGKey(0))
    batch = _batch(NEAR)
    after, _ = jax.jit(dsrl.update)(state, batch, jax.random.PRNGKey(1))
    plain, _ = jax.jit(ddpg.update)(state.agent, batch, jax.random.PRNGKey(1))
    for a, b in zip(jax.tree_util.tree_leaves(after.agent), jax.tree_util.tree_leaves(plain)):
        np.testing.assert_array_equal(a, b)
    obs = batch["observations"]
    np.testing.assert_array_equal(dsrl.act(after, obs, jax.random.PRNGKey(2), False),
                                  ddpg.act(plain, obs, jax.random.PRNGKey(2), False))


def test_dsrl_needs_a_safety_task():
    with pytest.raises(DrorlError, match="dsrl needs a safety task"):
        dsrl.init(dsrl.Config(), dataclasses.replace(SPEC, task="hopper"), jax.random.PRNGKey(0))
