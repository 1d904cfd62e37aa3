"""StackelbergLearner (Zhou and Qu 2023, arXiv 2309.16188): batch policy learning as a leader-follower game.

The follower, a value function q_phi, minimises a pessimistic objective: the value of the policy at the
initial states plus lambda times the kernel Bellman loss (a U-statistic over pairs of transitions, so no
double sampling); the leader, the policy pi_theta, ascends the total derivative of its value, which
anticipates the follower's best response (``drorl.optim.total_derivative``: conjugate gradient on
Hessian-vector products, beta annealed to a floor). The objectives are drorl's instantiation in
``shared/spec/stackelberg.md``, corrections included:

    q(s, pi)  = sum_a pi(a|s) q(s, a) (categorical pi), or q(s, a), a ~ pi(s) reparameterised (tanh-Gaussian pi)
    R_i       = (1 - g) r_i / c + g (1 - terminal_i) q(s'_i, pi) - q(s_i, a_i)
    f2        = E_{s0}[q(s0, pi)] + lambda L_K(R / (1 - g))        (follower, minimised; L_K the U-statistic)
    f1        = E_{s0}[q(s0, pi)]  or  E_{s ~ D}[q(s, pi)]           (leader, maximised)

or, with ``pessimism="relative"`` (drorl's addition; ATAC's relative pessimism, Cheng et al. 2022, arXiv
2202.02446), the value of pi relative to the data's own actions on dataset states in both players:

    f2        = E_{(s, a) ~ D}[q(s, pi) - q(s, a)] + lambda L_K(R / (1 - g)),   f1 = E_{(s, a) ~ D}[q(s, pi) - q(s, a)]

Why: with the absolute term the size of the pessimism a batch allows depends on the policy (how far the
follower can lower q(s0, pi) while staying Bellman-consistent on those rows), and on CartPole the leader
ascends it toward policies whose value terminal transitions pin, returning about 9 (docs/algorithms/
stackelberg.md). The relative term scores the behaviour policy 0 in expectation whatever the follower does,
so a policy's pessimistic score can only beat the data's where the data support it.

Units (the spec's caution that lambda trades squared-reward against return units): q estimates the
normalised value (1 - g) Q^pi / c, in per-step reward units divided by ``reward_scale`` c, and the kernel
loss is taken on R / (1 - g), the residual in q's own units (a constant error delta in q is a residual of
-delta on a continuing transition). That is the spec's f2 with lambda_spec = lambda / (1 - g)^2; it makes
lambda's meaning independent of the discount and, with c the typical reward, of the task.

Kernel (``drorl.nn.kernels.state_action_gram``): on discrete tasks a Gaussian RBF on standardised states
times the Kronecker delta of the actions (the limit of the spec's one-hot actions with a vanishing action
bandwidth: with one shared median bandwidth the kernel gave one state's two CartPole actions 0.88 and so
barely saw errors in the action gap, the only thing a greedy policy reads); on continuous ones one
Gaussian on (standardised state, action scaled to [-1, 1]); bandwidths by the median heuristic per batch.
On continuous tasks a'_i ~ pi(s'_i) is drawn independently for each transition, and the noise is
fixed within an update so that f1 and f2 are deterministic functions of (theta, phi) there.

The total derivative inverts a curvature of f2 plus beta I. By default both of f2's second-derivative
blocks are Gauss-Newton ones, those of f2 with its residuals linearised in (theta, phi): the curvature
2 lambda J^T K J / n^2 (J = d R / d phi; positive semi-definite, and the Hessian of f2 when q is linear in
phi, the pessimism term being linear in q's outputs) and the mixed block's kernel part 2 lambda J^T K
(d R / d theta) / n^2. The exact blocks add residual-weighted second derivatives, which vanish where the
residuals do; with a neural q whose pointwise residuals are large they dominate the exact mixed block
(``gauss_newton_follower``). The exact Hessian and mixed block with the V- or the
U-statistic are an option; with a neural q both Hessians are indefinite on a batch (the U-statistic's even
in the residuals; the spec's corrections), so CG stops at negative curvature.
In directions the data do not constrain (H v = 0) the solve is v / beta: there the Stackelberg term makes
the leader anticipate the follower lowering its value term (q(s0, pi), or q(s, pi) - q(s, a) with relative
pessimism) freely, so beta sets that pessimism's strength.
The follower itself descends the unbiased U-statistic. No target networks: the kernel loss is minimised
by its full gradient, through q(s', pi) as well.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from drorl.algos.base import Scaler, Spec
from drorl.errors import DrorlError
from drorl.nn.critics import Critic
from drorl.nn.kernels import bellman_residuals, state_action_gram, u_statistic, v_statistic
from drorl.nn.mlp import MLP
from drorl.nn.policies import TanhGaussianPolicy, tanh_gaussian_sample
from drorl.nn.train_state import TrainState, gradient_step
from drorl.optim import annealed_beta, total_derivative


# metrics the health monitor (drorl.health) watches for drift, and what drifting means
DIAGNOSTICS = {"pessimism_value": "the follower's pessimistic value runs away: the kernel Bellman loss does not "
                                   "hold the pessimism (raise kernel_weight)"}


@dataclasses.dataclass(frozen=True)
class Config:
    """StackelbergLearner hyper-parameters.

    Attributes:
        policy_hidden_dims: widths of the policy (categorical logits on discrete tasks, tanh-Gaussian on
            continuous ones).
        q_hidden_dims: widths of the value network q_phi(s, a).
        policy_lr: Adam learning rate of the leader (eta_pi).
        q_lr: Adam learning rate of the follower (eta_q).
        gamma: discount.
        batch_size: transitions per update (the kernel loss costs O(batch_size^2)).
        kernel_weight: lambda, weight of the kernel Bellman loss (on residuals in q's units) against the
            pessimism term E[q(s0, pi)]: larger is more transition-consistent and less pessimistic (on
            CartPole-medium, 10 let q(s0, pi) fall without levelling off; 100 holds it).
        reward_scale: c, rewards are divided by it (the typical per-step reward: q is then O(1)).
        cg_iters: conjugate-gradient steps (Hessian-vector products) per leader step.
        beta_initial: the regulariser beta of (H + beta I) at the first update.
        beta_floor: the value beta anneals to (keeps the solve defined where H is indefinite).
        beta_half_life: updates over which beta's excess over the floor halves.
        follower_curvature: the second derivatives of f2 in the total derivative: "gauss-newton" (the
            V-statistic kernel term's Gauss-Newton curvature, positive semi-definite, and mixed block), or
            the exact Hessian and mixed block of f2 with the "v" or the "u" statistic (the Hessians are
            indefinite with a neural q: relies on beta_floor and CG's negative-curvature stop).
        simultaneous: the ablation in which the leader ascends grad_theta f1 only (no Stackelberg term).
        leader_warmup: updates at the start during which the leader ascends grad_theta f1 only, as in the
            simultaneous ablation, while the follower approaches its best response (the total derivative
            assumes it is there). 0: the Stackelberg term from the first update (the spec's). beta's
            annealing counts from the first update, not from the warm-up's end.
        leader_states: "initial" (f1 = E_{s0}[q(s0, pi)], the paper's) or "dataset" (f1 = E_{s~D}[q(s, pi)],
            the spec's variant: with the initial-state objective the simultaneous ablation moves the policy
            only at initial states).
        pessimism: "absolute" (the value term of both players is q(s, pi) at the leader's states for f1 and
            E_{s0}[q(s0, pi)] for f2, the paper's) or "relative" (both are E_D[q(s, pi) - q(s, a)], ATAC's
            relative pessimism; needs leader_states="dataset").
    """

    policy_hidden_dims: tuple[int, ...] = (256, 256)
    q_hidden_dims: tuple[int, ...] = (256, 256)
    policy_lr: float = 3e-4
    q_lr: float = 3e-4
    gamma: float = 0.99
    batch_size: int = 256
    kernel_weight: float = 100.0
    reward_scale: float = 1.0
    cg_iters: int = 10
    beta_initial: float = 1.0
    beta_floor: float = 0.01
    beta_half_life: float = 5_000.0
    follower_curvature: Literal["gauss-newton", "v", "u"] = "gauss-newton"
    simultaneous: bool = False
    leader_warmup: int = 0
    leader_states: Literal["initial", "dataset"] = "initial"
    pessimism: Literal["absolute", "relative"] = "absolute"


@flax.struct.dataclass
class State:
    policy: TrainState
    q: TrainState
    scaler: Scaler
    step: jnp.ndarray
    config: Config = flax.struct.field(pytree_node=False)
    act_dim: int = flax.struct.field(pytree_node=False)
    num_actions: int | None = flax.struct.field(pytree_node=False)


class Networks(NamedTuple):
    """The leader's and the follower's networks; ``num_actions`` is None on continuous tasks."""

    policy: nn.Module
    q: nn.Module
    num_actions: int | None


def networks(config: Config, act_dim: int, num_actions: int | None) -> Networks:
    if num_actions is None:
        return Networks(TanhGaussianPolicy(config.policy_hidden_dims, act_dim), Critic(config.q_hidden_dims), None)
    return Networks(MLP(config.policy_hidden_dims, num_actions), MLP(config.q_hidden_dims, num_actions),
                    num_actions)


def init(config: Config, spec: Spec, key: jax.Array) -> State:
    if config.leader_warmup < 0:
        raise DrorlError(f"stackelberg: leader_warmup={config.leader_warmup}: expected a number of updates >= 0")
    if config.pessimism == "relative" and config.leader_states != "dataset":
        raise DrorlError("stackelberg: pessimism=relative compares pi with the data's actions, so it needs "
                         "leader_states=dataset")
    nets = networks(config, spec.act_dim, spec.num_actions)
    k_policy, k_q = jax.random.split(key)
    obs = jnp.zeros((1, spec.obs_dim), jnp.float32)
    q_args = (obs,) if spec.num_actions is not None else (obs, jnp.zeros((1, spec.act_dim), jnp.float32))
    return State(policy=TrainState.create(nets.policy.init(k_policy, obs), optax.adam(config.policy_lr)),
                 q=TrainState.create(nets.q.init(k_q, *q_args), optax.adam(config.q_lr)),
                 scaler=Scaler.from_spec(spec), step=jnp.zeros((), jnp.int32), config=config,
                 act_dim=spec.act_dim, num_actions=spec.num_actions)


def q_of_actions(nets: Networks, phi: Any, obs: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
    """q(s, a) for given actions: integer indices (n,) on discrete tasks, unit actions (n, A) otherwise."""
    if nets.num_actions is None:
        return nets.q.apply(phi, obs, actions)
    return jnp.take_along_axis(nets.q.apply(phi, obs), actions[:, None], axis=-1)[:, 0]


def policy_value(nets: Networks, theta: Any, phi: Any, obs: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
    """q(s, pi) per state: sum_a pi(a|s) q(s, a) exactly (categorical), or q(s, tanh(mu + sigma noise)) with
    the given standard normal ``noise`` (tanh-Gaussian, reparameterised so that theta gets a gradient)."""
    if nets.num_actions is None:
        mean, log_std = nets.policy.apply(theta, obs)
        return nets.q.apply(phi, obs, jnp.tanh(mean + jnp.exp(log_std) * noise))
    probs = jax.nn.softmax(nets.policy.apply(theta, obs), axis=-1)
    return jnp.sum(probs * nets.q.apply(phi, obs), axis=-1)


def policy_entropy(nets: Networks, theta: Any, obs: jnp.ndarray) -> jnp.ndarray:
    """Mean entropy of pi(.|s) over ``obs``: categorical, or the tanh-Gaussian's Gaussian before the tanh
    (a diagnostic: a leader that collapses onto one action drives it to 0, or down without bound)."""
    if nets.num_actions is None:
        _, log_std = nets.policy.apply(theta, obs)
        return jnp.mean(jnp.sum(log_std + 0.5 * jnp.log(2.0 * jnp.pi * jnp.e), axis=-1))
    log_probs = jax.nn.log_softmax(nets.policy.apply(theta, obs), axis=-1)
    return jnp.mean(-jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1))


def normalised_residuals(rewards: jnp.ndarray, terminals: jnp.ndarray, next_values: jnp.ndarray,
                         q_taken: jnp.ndarray, gamma: float, reward_scale: float) -> jnp.ndarray:
    """R_i / (1 - g), R_i = (1 - g) r_i / c + g (1 - terminal_i) q(s'_i, pi) - q(s_i, a_i): the spec's
    residual ("Objectives", with the corrections' terminal mask) for q = (1 - g) Q / c, in q's units."""
    scaled_rewards = (1.0 - gamma) * rewards / reward_scale
    return bellman_residuals(scaled_rewards, terminals, next_values, q_taken, gamma) / (1.0 - gamma)


def follower_objective(pessimism_values: jnp.ndarray, kernel_loss: jnp.ndarray, kernel_weight: float
                       ) -> jnp.ndarray:
    """f2 = E[v] + lambda L_K(q; pi), v = q(s0, pi) at initial states (the spec's pessimistic follower: the
    Lagrangian of min E q(s0, pi) subject to L_K <= eps, the paper's transition-consistent pessimism) or
    v = q(s, pi) - q(s, a) on dataset pairs (``pessimism="relative"``)."""
    return jnp.mean(pessimism_values) + kernel_weight * kernel_loss


def leader_objective(values: jnp.ndarray) -> jnp.ndarray:
    """f1 = E[q(s, pi)] over the leader's states (initial states in the spec, dataset states in its
    corrections' variant), maximised by the leader."""
    return jnp.mean(values)


KERNEL_STATISTICS = {"u": u_statistic, "v": v_statistic}


def prepare_batch(state: State, batch: dict[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
    """The batch standardised, actions as indices (discrete) or in [-1, 1] (continuous), and the kernel's
    Gram matrix on its (s, a) pairs (``state_action_gram``: median-heuristic bandwidths, fixed for the
    batch)."""
    obs = state.scaler.observation(batch["observations"])
    if state.num_actions is None:
        actions = state.scaler.to_unit_action(batch["actions"])
    else:
        actions = batch["actions"][:, 0].astype(jnp.int32)
    return {"obs": obs, "actions": actions, "next_obs": state.scaler.observation(batch["next_observations"]),
            "initial_obs": state.scaler.observation(batch["initial_observations"]),
            "rewards": batch["rewards"], "terminals": batch["terminals"],
            "gram": state_action_gram(obs, actions, state.num_actions)}


def game_terms(state: State, theta: Any, phi: Any, data: dict[str, jnp.ndarray], noise: jnp.ndarray,
               statistic: str) -> dict[str, jnp.ndarray]:
    """Both players' terms at (theta, phi) on one prepared batch: q(s0, pi) per initial state, the kernel
    loss with ``statistic`` ("u" or "v"), the leader's values (q(s, pi) at its states, or q(s, pi) - q(s, a)
    with relative pessimism) and the follower's pessimism values. ``noise`` [3, B, A] holds the standard
    normal draws of a' ~ pi(s'), a0 ~ pi(s0) and a ~ pi(s) (continuous tasks)."""
    config = state.config
    nets = networks(config, state.act_dim, state.num_actions)
    next_values = policy_value(nets, theta, phi, data["next_obs"], noise[0])
    q_taken = q_of_actions(nets, phi, data["obs"], data["actions"])
    residuals = normalised_residuals(data["rewards"], data["terminals"], next_values, q_taken, config.gamma,
                                     config.reward_scale)
    initial_values = policy_value(nets, theta, phi, data["initial_obs"], noise[1])
    if config.leader_states == "initial":
        leader_values = initial_values
    else:
        leader_values = policy_value(nets, theta, phi, data["obs"], noise[2])
    if config.pessimism == "relative":
        leader_values = leader_values - q_taken
    kernel_loss = KERNEL_STATISTICS[statistic](residuals, data["gram"])
    return {"initial_values": initial_values, "kernel_loss": kernel_loss, "leader_values": leader_values,
            "pessimism_values": leader_values if config.pessimism == "relative" else initial_values,
            "residuals": residuals}


def follower(state: State, data: dict[str, jnp.ndarray], noise: jnp.ndarray, statistic: str = "u"):
    """f2(theta, phi) -> (value, terms) on one prepared batch."""
    def f2(theta, phi):
        terms = game_terms(state, theta, phi, data, noise, statistic)
        return follower_objective(terms["pessimism_values"], terms["kernel_loss"], state.config.kernel_weight), terms

    return f2


def leader(state: State, data: dict[str, jnp.ndarray], noise: jnp.ndarray):
    """f1(theta, phi) on one prepared batch."""
    return lambda theta, phi: leader_objective(game_terms(state, theta, phi, data, noise, "u")["leader_values"])


def gauss_newton_curvature(state: State, theta: Any, phi: Any, data: dict[str, jnp.ndarray],
                           noise: jnp.ndarray):
    """v -> 2 lambda J^T K J v / n^2, J = d R / d phi: the Gauss-Newton matrix of the V-statistic kernel
    term at phi, a positive semi-definite stand-in for d2 f2 / d phi2 (one JVP and one VJP per product)."""
    def residuals(p):
        return game_terms(state, theta, p, data, noise, "v")["residuals"]

    _, jvp = jax.linearize(residuals, phi)
    vjp = jax.linear_transpose(jvp, phi)
    gram = data["gram"]
    scale = 2.0 * state.config.kernel_weight / gram.shape[0] ** 2
    return lambda v: jax.tree.map(lambda g: scale * g, vjp(gram @ jvp(v))[0])


def gauss_newton_follower(state: State, theta: Any, phi: Any, data: dict[str, jnp.ndarray], noise: jnp.ndarray):
    """f2 with the residuals linearised at (theta, phi): E[v] + lambda V(R0 + J_theta dtheta +
    J_phi dphi). Its mixed block d2 f2 / d theta d phi is the pessimism term's plus 2 lambda J_phi^T K J_theta
    / n^2, the Gauss-Newton block that goes with ``gauss_newton_curvature``: the residual-weighted second
    derivatives sum_ij K_ij R_j d2 R_i / d theta d phi, which vanish where the residuals do, are left out of
    both. (On CartPole-medium, where q's pointwise residuals stay large, they were most of the exact mixed
    block's Stackelberg correction: norms 86 and 38 against 7 and 14 for the Gauss-Newton part on two
    batches, the leader's own gradient 0.04.)"""
    def residuals(t, p):
        return game_terms(state, t, p, data, noise, "v")["residuals"]

    start, linear = jax.linearize(residuals, theta, phi)

    def f2(t, p):
        linearised = start + linear(jax.tree.map(jnp.subtract, t, theta), jax.tree.map(jnp.subtract, p, phi))
        pessimism_values = game_terms(state, t, p, data, noise, "v")["pessimism_values"]
        return follower_objective(pessimism_values, v_statistic(linearised, data["gram"]), state.config.kernel_weight)

    return f2


def leader_gradient(state: State, phi: Any, data: dict[str, jnp.ndarray], noise: jnp.ndarray) -> tuple[Any, dict]:
    """d f1 / d theta at (theta, phi): the total derivative grad_theta f1 - (d2 f2 / d theta d phi)
    (d2 f2 / d phi2 + beta I)^{-1} grad_phi f1 (spec "Updates"), or grad_theta f1 alone (simultaneous)."""
    config, theta = state.config, state.policy.params
    if config.simultaneous:
        grad = jax.grad(leader(state, data, noise))(theta, phi)
        return grad, {"leader_partial_norm": optax.tree.norm(grad), "leader_stackelberg_norm": jnp.zeros(())}
    beta = annealed_beta(state.step, initial=config.beta_initial, floor=config.beta_floor,
                         half_life=config.beta_half_life)
    if config.follower_curvature == "gauss-newton":
        f2 = gauss_newton_follower(state, theta, phi, data, noise)
        curvature = gauss_newton_curvature(state, theta, phi, data, noise)
    else:
        exact = follower(state, data, noise, config.follower_curvature)
        f2, curvature = (lambda t, p: exact(t, p)[0]), None
    result = total_derivative(leader(state, data, noise), f2, theta, phi, beta=beta, max_iters=config.cg_iters,
                              curvature=curvature)
    stackelberg_term = jax.tree.map(jnp.subtract, result.grad, result.partial)
    # during the warm-up the total derivative is still computed (under vmap over seeds a cond would run both
    # branches anyway) and its size logged, but the leader takes the partial gradient
    warming = state.step < config.leader_warmup
    grad = jax.tree.map(lambda partial, total: jnp.where(warming, partial, total), result.partial, result.grad)
    return grad, {"beta": beta, "cg_iterations": result.cg.iterations.astype(jnp.float32),
                         "cg_negative_curvature": result.cg.negative_curvature.astype(jnp.float32),
                         "leader_partial_norm": optax.tree.norm(result.partial),
                         "leader_stackelberg_norm": optax.tree.norm(stackelberg_term)}


def update(state: State, batch: dict[str, jnp.ndarray], key: jax.Array) -> tuple[State, dict]:
    """The follower descends f2 (U-statistic), then the leader ascends its total derivative at the new phi."""
    data = prepare_batch(state, batch)
    noise = jax.random.normal(key, (3, state.config.batch_size, state.act_dim))  # read on continuous tasks only
    f2 = follower(state, data, noise)
    q, (follower_loss, terms), _ = gradient_step(state.q, lambda phi: f2(state.policy.params, phi), has_aux=True)
    grad, metrics = leader_gradient(state, q.params, data, noise)
    policy = state.policy.apply_gradients(jax.tree.map(jnp.negative, grad))  # the leader maximises f1
    metrics |= {"follower_objective": follower_loss, "kernel_loss": terms["kernel_loss"],
                "initial_value": jnp.mean(terms["initial_values"]),
                "pessimism_value": jnp.mean(terms["pessimism_values"]),
                "leader_objective": leader_objective(terms["leader_values"]),
                "leader_grad_norm": optax.tree.norm(grad),
                "policy_entropy": policy_entropy(networks(state.config, state.act_dim, state.num_actions),
                                                 policy.params, data["obs"])}
    return state.replace(policy=policy, q=q, step=state.step + 1), metrics


def act(state: State, obs: jnp.ndarray, key: jax.Array, deterministic: bool = True) -> jnp.ndarray:
    """The policy's mode (deterministic) or a sample, in the task's action box (an index column if discrete)."""
    nets = networks(state.config, state.act_dim, state.num_actions)
    x = state.scaler.observation(obs)
    if state.num_actions is not None:
        logits = nets.policy.apply(state.policy.params, x)
        index = jnp.argmax(logits, axis=-1) if deterministic else jax.random.categorical(key, logits)
        return index[..., None].astype(jnp.float32)
    mean, log_std = nets.policy.apply(state.policy.params, x)
    unit = jnp.tanh(mean) if deterministic else tanh_gaussian_sample(mean, log_std, key)
    return state.scaler.from_unit_action(unit)
