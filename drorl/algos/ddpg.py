"""Deep deterministic policy gradient (Lillicrap et al. 2016), online.

A deterministic actor, one critic, Polyak-averaged target networks and Gaussian exploration noise, with
the defaults of the re-tuned DDPG of Fujimoto et al. 2018 (Adam 3e-4, tau 0.005, batches of 256, noise
0.1). :func:`update_through` trains through an action map applied to the actor's output, which is how
DSRL (``drorl.algos.dsrl``) puts its safety layer inside the actor and critic targets; plain DDPG is
that update with the identity.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from drorl.algos.base import Scaler, Spec
from drorl.nn.critics import Critic
from drorl.nn.policies import DeterministicPolicy
from drorl.nn.train_state import TrainState, gradient_step

# metrics the health monitor (drorl.health) watches for drift, and what drifting means
DIAGNOSTICS = {"q_target_mean": "the critic diverges (bootstrapped values feeding on themselves)"}

# (map parameters, raw observations [B, obs_dim], unit actions [B, A]) -> unit actions executed
ActionMap = Callable[[Any, jnp.ndarray, jnp.ndarray], jnp.ndarray]


@dataclasses.dataclass(frozen=True)
class Config:
    """DDPG hyper-parameters.

    Attributes:
        hidden_dims: widths of the actor's and the critic's hidden layers.
        actor_lr: Adam learning rate of the actor.
        critic_lr: Adam learning rate of the critic.
        gamma: discount.
        tau: Polyak rate of the target networks.
        batch_size: transitions per update.
        exploration_noise: std of the Gaussian added to the actor's output in [-1, 1]^A when exploring.
    """

    hidden_dims: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    exploration_noise: float = 0.1


@flax.struct.dataclass
class State:
    actor: TrainState
    critic: TrainState
    target_actor: Any
    target_critic: Any
    scaler: Scaler
    step: jnp.ndarray
    config: Config = flax.struct.field(pytree_node=False)
    act_dim: int = flax.struct.field(pytree_node=False)


def _networks(config: Config, act_dim: int) -> tuple[DeterministicPolicy, Critic]:
    return DeterministicPolicy(config.hidden_dims, act_dim), Critic(config.hidden_dims)


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    actor_net, critic_net = _networks(config, spec.act_dim)
    k_actor, k_critic = jax.random.split(key)
    obs = jnp.zeros((1, spec.obs_dim), jnp.float32)
    actor = actor_net.init(k_actor, obs)
    critic = critic_net.init(k_critic, obs, jnp.zeros((1, spec.act_dim), jnp.float32))
    copy = lambda params: jax.tree_util.tree_map(jnp.copy, params)  # noqa: E731  own buffers: states are donated
    return State(actor=TrainState.create(actor, optax.adam(config.actor_lr)),
                 critic=TrainState.create(critic, optax.adam(config.critic_lr)),
                 target_actor=copy(actor), target_critic=copy(critic), scaler=Scaler.from_spec(spec),
                 step=jnp.zeros((), jnp.int32), config=config, act_dim=spec.act_dim)


def critic_loss(q: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """E[(Q(s, a) - y)^2],  y = r + gamma (1 - d) Qbar(s', mu_bar(s')) (Lillicrap et al., eq. 2-3)."""
    return jnp.mean((q - target) ** 2)


def actor_loss(q: jnp.ndarray) -> jnp.ndarray:
    """-E_s[Q(s, mu(s))]: its gradient is the deterministic policy gradient (Lillicrap et al., eq. 6)."""
    return -jnp.mean(q)


def identity(map_params: Any, raw_obs: jnp.ndarray, unit_actions: jnp.ndarray) -> jnp.ndarray:
    """The action map of plain DDPG: the actor's action is executed as it is."""
    del map_params, raw_obs
    return unit_actions


def update_through(state: State, batch: dict[str, jnp.ndarray], action_map: ActionMap,
                   map_params: Any) -> tuple[State, dict, Any]:
    """One critic and one actor step with ``action_map`` between the actor and the critic.

    The critic's target action is the map of the target actor's, the actor's loss is taken through the
    map, and the gradient of that loss with respect to ``map_params`` is returned (for an adversary).
    """
    config = state.config
    actor_net, critic_net = _networks(config, state.act_dim)
    obs = state.scaler.observation(batch["observations"])
    next_obs = state.scaler.observation(batch["next_observations"])
    next_actions = action_map(map_params, batch["next_observations"], actor_net.apply(state.target_actor, next_obs))
    next_q = critic_net.apply(state.target_critic, next_obs, next_actions)
    target = jax.lax.stop_gradient(batch["rewards"] + config.gamma * (1.0 - batch["terminals"]) * next_q)
    actions = state.scaler.to_unit_action(batch["actions"])
    critic, c_loss, _ = gradient_step(state.critic, lambda p: critic_loss(critic_net.apply(p, obs, actions), target))

    def actor_objective(params, map_params_):
        executed = action_map(map_params_, batch["observations"], actor_net.apply(params, obs))
        return actor_loss(critic_net.apply(critic.params, obs, executed))

    # actor and map parameters differentiated together (a simultaneous game when the map is an adversary)
    a_loss, (a_grads, map_grads) = jax.value_and_grad(actor_objective, argnums=(0, 1))(state.actor.params, map_params)
    actor = state.actor.apply_gradients(a_grads)
    new_state = state.replace(
        actor=actor, critic=critic, step=state.step + 1,
        target_actor=optax.incremental_update(actor.params, state.target_actor, config.tau),
        target_critic=optax.incremental_update(critic.params, state.target_critic, config.tau))
    return new_state, {"critic_loss": c_loss, "actor_loss": a_loss, "q_target_mean": jnp.mean(target)}, map_grads


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array) -> tuple[State, dict]:
    del key
    new_state, metrics, _ = update_through(state, batch, identity, ())
    return new_state, metrics


def unit_action(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    """mu(s) in [-1, 1]^A, plus clipped Gaussian exploration noise unless ``deterministic``."""
    actor_net, _ = _networks(state.config, state.act_dim)
    mean = actor_net.apply(state.actor.params, state.scaler.observation(obs))
    if deterministic:
        return mean
    noise = state.config.exploration_noise * jax.random.normal(key, mean.shape)
    return jnp.clip(mean + noise, -1.0, 1.0)


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    return state.scaler.from_unit_action(unit_action(state, obs, key, deterministic))


def policy_params(state: State) -> Any:
    """The parameters that act (what snapshots keep)."""
    return state.actor.params


def with_policy_params(state: State, params: Any) -> State:
    return state.replace(actor=state.actor.replace(params=params))
