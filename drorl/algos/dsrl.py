"""DSRL: distributionally safe RL with a differentiable CBF-QP layer (Chriat and Sun, arXiv 2310.02459).

DDPG whose actor output passes through the safety layer of :mod:`drorl.robust.cbf_qp`: the executed
action is u* = argmin ||u - u_RL||^2 + M eps^2 subject to the CBF rows of every obstacle, written for
the disturbance mean xi_bar the layer guards against (shared spec ``safe-rl.md``, "Safety layer",
"Worst-case uncertainty", "Training" and its Corrections). The critic learns on (s, u*), the actor's
gradient flows through the QP, and with the robust layer an adversary moves the transported nominal
samples xi_i = xi0_i + delta_i inside the Wasserstein-1 ball of radius rho_d by projected gradient
ascent on the same actor loss, alongside the actor (one simultaneous step; the paper's single level).

``layer`` selects the method so that the baselines are this same code: ``robust`` (DSRL),
``nominal`` (xi_bar = mean of the nominal samples, no adversary) and ``none`` (plain DDPG). With
``adversary="margin"`` the robust layer uses the closed-form worst case instead of the ascent: each
row tightened by rho_d ||c_xi|| (exact for rows affine in xi; spec, Corrections).

The rows are rebuilt from each raw observation (:func:`drorl.envs.safety.cbf_rows`), so DSRL runs on
the safety tasks only (``safe-unicycle``, ``safe-double-integrator``, ``safe-quadcopter``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp

from drorl.algos import ddpg
from drorl.algos.base import Scaler, Spec
from drorl.envs.safety import SafetyTask, cbf_rows, get_safety_task
from drorl.errors import DrorlError
from drorl.robust.cbf_qp import DEFAULT_SLACK_WEIGHT, CBFRows, cbf_qp
from drorl.robust.wasserstein import ascent_step

# DSRL's agent is DDPG's: the same critic to watch (drorl.health)
DIAGNOSTICS = ddpg.DIAGNOSTICS

TASKS = ("safe-unicycle", "safe-double-integrator", "safe-quadcopter")


@dataclasses.dataclass(frozen=True)
class Config:
    """DSRL hyper-parameters: the DDPG agent, the safety layer and its adversary.

    Attributes:
        ddpg: the DDPG agent the layer sits in (networks, learning rates, exploration).
        layer: ``robust`` (guard against the worst case in the W1 ball: DSRL), ``nominal`` (guard
            against the nominal sample mean) or ``none`` (no layer: DDPG).
        adversary: how the robust layer finds the worst case: ``ascent`` (projected gradient ascent
            on the actor loss over transported samples, the paper's) or ``margin`` (each row
            tightened by radius ||c_xi||, the closed-form worst case).
        radius: rho_d, the radius of the W1 ball around the nominal samples.
        ascent_step: eta, the adversary's step on d(actor loss)/d delta.
        num_samples: N, nominal disturbance samples xi0 ~ p0 the learner holds.
        slack_weight: M, the weight of the QP's slack (large: the rows hold whenever they can).
    """

    ddpg: ddpg.Config = ddpg.Config()
    layer: Literal["robust", "nominal", "none"] = "robust"
    adversary: Literal["ascent", "margin"] = "ascent"
    radius: float = 0.2
    ascent_step: float = 1.0
    num_samples: int = 32
    slack_weight: float = DEFAULT_SLACK_WEIGHT

    @property
    def batch_size(self) -> int:
        """Transitions per update, the agent's: what the training loops draw."""
        return self.ddpg.batch_size


@flax.struct.dataclass
class State:
    agent: ddpg.State
    nominal_samples: jnp.ndarray  # xi0 [N, d]
    delta: jnp.ndarray  # the adversary's transport of each sample [N, d]
    config: Config = flax.struct.field(pytree_node=False)
    task: SafetyTask = flax.struct.field(pytree_node=False)

    @property
    def scaler(self) -> Scaler:
        return self.agent.scaler


def _safety_task(spec: Spec) -> SafetyTask:
    if spec.task not in TASKS:
        raise DrorlError(f"dsrl needs a safety task, one of {', '.join(TASKS)}; got {spec.task!r}")
    task = get_safety_task(spec.task)
    if (spec.obs_dim, spec.act_dim) != (task.obs_dim, task.act_dim):
        raise DrorlError(f"spec shapes ({spec.obs_dim}, {spec.act_dim}) are not those of {spec.task} "
                         f"({task.obs_dim}, {task.act_dim})")
    return task


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    task = _safety_task(spec)
    k_agent, k_samples = jax.random.split(key)
    nominal = task.nominal_std * jax.random.normal(k_samples, (config.num_samples, task.pos_dim))
    return State(agent=ddpg.init(config.ddpg, spec, k_agent), nominal_samples=nominal,
                 delta=jnp.zeros_like(nominal), config=config, task=task)


def guarded_rows(task: SafetyTask, config: Config, raw_obs: jnp.ndarray, disturbance_mean: jnp.ndarray) -> CBFRows:
    """The rows the layer enforces: grad-h rows at xi_bar (spec, "Safety layer"), tightened by
    rho_d ||c_xi|| with the margin adversary, the exact worst case E[c^T xi] = c^T mean(xi0) - rho_d ||c||
    over the W1 ball for rows affine in xi (spec, "Worst-case uncertainty" and Corrections)."""
    rows = cbf_rows(task, raw_obs, disturbance_mean)
    if config.layer == "robust" and config.adversary == "margin":
        return rows._replace(b=rows.b + config.radius * jnp.linalg.norm(rows.disturbance_coeff, axis=-1))
    return rows


def safe_unit_action(task: SafetyTask, config: Config, scaler: Scaler, nominal: jnp.ndarray, delta: jnp.ndarray,
                     raw_obs: jnp.ndarray, unit: jnp.ndarray) -> jnp.ndarray:
    """u* = CBF-QP(u_RL) with xi_bar = mean_i(xi0_i + delta_i), in [-1, 1]^A (DSRL's rectified action).

    Differentiable in the actor's action and in ``delta`` through the QP's KKT conditions.
    """
    if config.layer == "none":
        return unit
    rows = guarded_rows(task, config, raw_obs, jnp.mean(nominal + delta, axis=0))
    safe = cbf_qp(scaler.from_unit_action(unit), rows.A, rows.b, scaler.action_low, scaler.action_high,
                  config.slack_weight)
    return jnp.clip(scaler.to_unit_action(safe), -1.0, 1.0)


def adversary_step(delta: jnp.ndarray, actor_loss_grad: jnp.ndarray, config: Config) -> jnp.ndarray:
    """delta <- Proj_B(delta + eta dL/d delta), L the actor loss (paper, Section III-B; spec, "Worst-case
    uncertainty"): the transport that most lowers Q through the layer, kept in the W1 ball."""
    return ascent_step(delta, actor_loss_grad, config.ascent_step, config.radius)


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array) -> tuple[State, dict]:
    del key
    config = state.config
    action_map = functools.partial(safe_unit_action, state.task, config, state.scaler, state.nominal_samples)
    agent, metrics, delta_grad = ddpg.update_through(state.agent, batch, action_map, state.delta)
    delta = state.delta
    if config.layer == "robust" and config.adversary == "ascent":
        delta = adversary_step(delta, delta_grad, config)
    shift = jnp.linalg.norm(jnp.mean(delta, axis=0))
    transport = jnp.mean(jnp.linalg.norm(delta, axis=-1))
    return state.replace(agent=agent, delta=delta), {**metrics, "disturbance_shift": shift,
                                                     "transport_mean": transport}


def guarded_action(state: State, obs: jnp.ndarray, unit: jnp.ndarray) -> jnp.ndarray:
    """The layer applied to a unit action, returned in the task's action box."""
    return state.scaler.from_unit_action(
        safe_unit_action(state.task, state.config, state.scaler, state.nominal_samples, state.delta, obs, unit))


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    """The layer applied to DDPG's action (with its exploration noise: exploring stays guarded)."""
    return guarded_action(state, obs, ddpg.unit_action(state.agent, obs, key, deterministic))


def executed_action(state: State, obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
    """The layer applied to a raw action in the task's box: what the online loop executes and stores for its
    uniform warm-up actions, so that the buffer holds only actions the method itself would execute."""
    if state.config.layer == "none":  # the raw action itself, not its round trip through [-1, 1]
        return action
    return guarded_action(state, obs, state.scaler.to_unit_action(action))


def policy_params(state: State) -> Any:
    """What acts: the actor and the adversary's transport (the layer's xi_bar depends on it)."""
    return {"actor": ddpg.policy_params(state.agent), "delta": state.delta}


def with_policy_params(state: State, params: Any) -> State:
    return state.replace(agent=ddpg.with_policy_params(state.agent, params["actor"]), delta=params["delta"])
