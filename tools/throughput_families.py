"""The throughput benchmark's items for three algorithm families, each measured beside its peer.

- model-based (issue 18, Speed): dynamics-ensemble training steps/s, all members in one vectorised
  program (``drorl.nn.dynamics.train``) against the same members trained one after another (a member
  trains to the same parameters alone: its keys are its own); model-rollout transitions/s, the compiled
  scan of ``drorl.algos.model_based.rollout`` against a per-step Python loop calling the jitted policy
  and model with the termination rule in NumPy (what MBPO-style code does); COMBO, DROMO and MOPO
  updates/s and FLOP utilisation (the algorithm rows of ``tools.throughput``).
- safe RL (issue 19, Speed): the CBF-QP layer's batched solves plus gradients per second on CBF rows of
  the safety tasks' own states, against ``cvxpylayers`` (JAX interface, its default diffcp/SCS backend)
  on the same instances; DSRL updates/s; environment steps/s of the batched JAX safety systems against
  their Gymnasium wrapper stepped one env at a time.
- Stackelberg (issue 20, Speed): the cost of a leader step (CG with k Hessian-vector products) in units
  of a plain gradient step of the follower's objective, the objective the HVPs differentiate (the
  acceptance bound is k + 3), and of the leader's partial-gradient step (the simultaneous ablation);
  StackelbergLearner updates/s and FLOP utilisation (the algorithm rows).

Every timed call is compiled (or, for the Python loops, its jitted pieces are) before it is timed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from drorl.algos import combo, model_based, sac, stackelberg
from drorl.algos.base import Spec
from drorl.data.dataset import Dataset
from drorl.envs import safety
from drorl.envs.termination import terminated
from drorl.nn import dynamics
from drorl.nn.train_state import gradient_step
from drorl.robust.cbf_qp import DEFAULT_SLACK_WEIGHT, cbf_qp
from drorl.train import batch_sampler, device_data

FAMILIES = ("model-based", "safe-rl", "stackelberg")
# the registered algorithms whose rows (updates/s, utilisation) each family's table repeats
FAMILY_ALGORITHMS = {"model-based": ("combo", "dromo", "mopo", "mopo-auto"), "safe-rl": ("dsrl",),
                     "stackelberg": ("stackelberg",)}
SAFETY_TASKS = tuple(safety.TASKS)

# small: network widths for the smoke profile (None: the algorithms' defaults); min_seconds: each timed
# arm repeats its call until this long has passed (at least twice)
SIZES = {
    "smoke": dict(small=(32, 32), min_seconds=0.0, dynamics_rows=700, dynamics_epochs=1, rollout_starts=(8,),
                  qp_tasks=("unicycle",), qp_batch=8, env_tasks=("unicycle",), envs=8, gym_steps=20,
                  leader_iters=(2,), leader_steps=2),
    "quick": dict(small=None, min_seconds=1.0, dynamics_rows=6_400, dynamics_epochs=3, rollout_starts=(50, 5_000),
                  qp_tasks=SAFETY_TASKS, qp_batch=256, env_tasks=SAFETY_TASKS, envs=1_000, gym_steps=300,
                  leader_iters=(2, 10), leader_steps=5),
    "full": dict(small=None, min_seconds=3.0, dynamics_rows=26_000, dynamics_epochs=5, rollout_starts=(50, 50_000),
                 qp_tasks=SAFETY_TASKS, qp_batch=1_024, env_tasks=SAFETY_TASKS, envs=10_000, gym_steps=1_000,
                 leader_iters=(1, 5, 10, 20), leader_steps=10),
}
CVXPYLAYERS_HINT = "pip install 'drorl[bench]'"


def seconds_per_call(fn: Callable[[], Any], min_seconds: float, min_calls: int = 2, warm_up: bool = True) -> float:
    """Seconds per call of ``fn`` after one warm-up call (which compiles; ``warm_up=False`` when the caller
    made it): at least ``min_calls`` calls and ``min_seconds`` in all."""
    if warm_up:
        jax.block_until_ready(fn())
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        jax.block_until_ready(fn())
        calls += 1
    return (time.perf_counter() - start) / calls


def first_rows(dataset: Dataset, n: int) -> Dataset:
    return Dataset.from_arrays({key: values[:n] for key, values in dataset.arrays().items()})


# ---------------------------------------------------------------------------------------------
# Model-based
# ---------------------------------------------------------------------------------------------


def dynamics_config(small: tuple[int, ...] | None, epochs: int) -> dynamics.Config:
    """The ensemble as COMBO trains it (or a small one), running exactly ``epochs`` epochs: patience
    equal to the cap, so early stopping never ends a timed run sooner."""
    config = dynamics.Config(max_epochs=epochs, patience=epochs)
    if small is not None:
        config = dataclasses.replace(config, num_members=3, num_elites=2, hidden_dims=small,
                                     weight_decays=config.weight_decays[:len(small)] + config.weight_decays[-1:])
    return config


def bench_dynamics_training(sizes: dict, dataset: Dataset) -> dict[str, Any]:
    """Ensemble training steps/s (every member one Adam step): one vectorised program against the members
    trained one after another, each call of ``dynamics.train`` timed after a warm-up call with its config."""
    config = dynamics_config(sizes["small"], sizes["dynamics_epochs"])
    member = dataclasses.replace(config, num_members=1, num_elites=1)
    key = jax.random.PRNGKey(0)
    member_keys = jax.random.split(jax.random.fold_in(key, 1), config.num_members)

    def vectorised():
        return dynamics.train(config, dataset, key, progress=False, member_keys=member_keys)

    def one_after_another():
        return [dynamics.train(member, dataset, key, progress=False, member_keys=member_keys[m:m + 1])
                for m in range(config.num_members)]

    _, report = vectorised()  # compiles
    together = seconds_per_call(vectorised, 0.0, min_calls=1, warm_up=False)
    dynamics.train(member, dataset, key, progress=False, member_keys=member_keys[:1])  # compiles the member's
    apart = seconds_per_call(one_after_another, 0.0, min_calls=1, warm_up=False)
    steps = report["epochs"] * (report["train_transitions"] // min(config.batch_size, report["train_transitions"]))
    return {"members": config.num_members, "hidden_dims": list(config.hidden_dims), "epochs": report["epochs"],
            "steps": steps, "vectorised_steps_per_s": steps / together, "loop_steps_per_s": steps / apart,
            "speedup": apart / together}


def bench_model_rollouts(sizes: dict, dataset: Dataset, task: str = "hopper") -> list[dict[str, Any]]:
    """Model-rollout transitions/s as COMBO rolls out (its horizon, SAC actor and ensemble, one random
    elite per row, ``task``'s termination rule), for each start-batch size: the compiled scan of
    ``model_based.rollout`` against a per-step Python loop calling the jitted policy and model, with the
    termination rule in NumPy and the rows gathered on the host. Both draw the same keys, so their rows
    agree (``same_rows``)."""
    config = combo.Config()
    sac_config = config.sac if sizes["small"] is None else dataclasses.replace(config.sac, hidden_dims=sizes["small"])
    spec = Spec.from_dataset(dataset, task=task)
    key = jax.random.PRNGKey(0)
    model = dynamics.init(dynamics_config(sizes["small"], 1), spec.obs_dim, spec.act_dim, key)
    actor = sac.init(sac_config, spec, jax.random.fold_in(key, 1))
    horizon = config.model.horizon

    def policy(obs, k):
        return sac.act(actor, obs, k, deterministic=False)

    compiled = jax.jit(lambda starts, k: model_based.rollout(model, task, policy, starts, horizon, k))
    policy_step, model_step = jax.jit(policy), jax.jit(dynamics.predict)

    def python_loop(starts, k):
        obs, alive, rows = starts, np.ones(starts.shape[0], bool), []
        for step_key in jax.random.split(k, horizon):
            k_policy, k_model = jax.random.split(step_key)
            actions = policy_step(obs, k_policy)
            next_obs, rewards, _ = model_step(model, obs, actions, k_model)
            next_host = np.asarray(next_obs)
            done = terminated(task, next_host, np)
            rows.append({"observations": np.asarray(obs), "actions": np.asarray(actions),
                         "rewards": np.asarray(rewards), "next_observations": next_host, "terminals": done,
                         "valid": alive.copy()})
            alive, obs = alive & ~done, next_obs
        return {column: np.concatenate([row[column] for row in rows]) for column in rows[0]}

    out = []
    for n in sizes["rollout_starts"]:
        starts = jnp.asarray(dataset.observations[np.arange(n) % len(dataset)])
        k = jax.random.fold_in(key, n)
        rows, valid = jax.block_until_ready(compiled(starts, k))  # compiles
        looped = python_loop(starts, k)  # compiles the policy's and the model's step
        t_compiled = seconds_per_call(lambda: compiled(starts, k), sizes["min_seconds"], warm_up=False)
        t_loop = seconds_per_call(lambda: python_loop(starts, k), sizes["min_seconds"], warm_up=False)
        same = (np.allclose(np.asarray(rows["next_observations"]), looped["next_observations"], rtol=1e-4, atol=1e-4)
                and np.array_equal(np.asarray(valid), looped["valid"]))
        transitions = n * horizon
        out.append({"starts": n, "horizon": horizon, "members": model.config.num_members,
                    "compiled_transitions_per_s": transitions / t_compiled,
                    "loop_transitions_per_s": transitions / t_loop, "speedup": t_loop / t_compiled,
                    "same_rows": bool(same)})
    return out


# ---------------------------------------------------------------------------------------------
# Safe RL
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("task", "episodes", "steps"))
def _random_action_steps(task: safety.SafetyTask, episodes: int, steps: int, key: jax.Array) -> tuple:
    """``episodes`` envs from random layouts stepped ``steps`` times with uniform actions: the rows
    (obs, action, reward, next obs, terminated), each [steps, episodes, ...]."""
    k_reset, k_actions = jax.random.split(key)
    env_states, obs = jax.vmap(lambda k: safety.reset(task, k))(jax.random.split(k_reset, episodes))
    low, high = jnp.asarray(task.action_low), jnp.asarray(task.action_high)

    def body(carry, k):
        env_states, obs = carry
        actions = jax.random.uniform(k, (episodes, task.act_dim), minval=low, maxval=high)
        env_states, out = jax.vmap(functools.partial(safety.step, task))(env_states, actions)
        return (env_states, out.obs), (obs, actions, out.reward, out.obs, out.terminated)

    return jax.lax.scan(body, (env_states, obs), jax.random.split(k_actions, steps))[1]


def safety_transitions(task: safety.SafetyTask, n: int, key: jax.Array, steps: int = 20) -> dict[str, np.ndarray]:
    """``n`` transitions of ``task`` under uniformly random actions: ceil(n / steps) episodes from random
    layouts, ``steps`` steps each (an episode that ended keeps moving: only the shapes and the states'
    spread matter here), each segment's last row marked as a timeout."""
    rows = _random_action_steps(task, math.ceil(n / steps), steps, key)
    # [steps, episodes, ...] -> episode-major rows, the first n
    obs, actions, rewards, next_obs, terminals = (np.asarray(jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:]))[:n]
                                                  for x in rows)
    terminals = terminals.astype(bool)
    timeouts = np.zeros(n, bool)
    timeouts[steps - 1::steps] = True
    return {"observations": obs, "actions": actions, "rewards": rewards, "next_observations": next_obs,
            "terminals": terminals, "timeouts": timeouts & ~terminals}


def safety_dataset(task_name: str, n: int, seed: int = 0) -> Dataset:
    """A dataset of ``n`` random-action transitions of a safety task (what DSRL's update is timed on)."""
    task = safety.get_safety_task(task_name)
    return Dataset.from_arrays(safety_transitions(task, n, jax.random.PRNGKey(seed)),
                               metadata={"env": task.gym_id})


def qp_instances(task: safety.SafetyTask, batch: int, key: jax.Array) -> dict[str, jnp.ndarray]:
    """The layer's problems at ``batch`` states of ``task`` (random-action transitions): the task's CBF rows
    at the nominal disturbance mean, RL actions uniform in the box, and a random cotangent of u*."""
    obs = safety_transitions(task, batch, key)["observations"]
    rows = safety.cbf_rows(task, jnp.asarray(obs), jnp.zeros(task.pos_dim))
    k_u, k_w = jax.random.split(jax.random.fold_in(key, 1))
    low, high = np.asarray(task.action_low, np.float32), np.asarray(task.action_high, np.float32)
    return {"u_rl": jax.random.uniform(k_u, (batch, task.act_dim), minval=low, maxval=high), "A": rows.A,
            "b": rows.b, "weights": jax.random.normal(k_w, (batch, task.act_dim)), "low": low, "high": high}


def drorl_qp_layer(problems: dict) -> Callable[[], tuple]:
    """The batched layer's solution and its gradient w.r.t. (u_RL, A, b) of sum(weights * u*), jitted."""
    low, high, weights = problems["low"], problems["high"], problems["weights"]

    def loss(u_rl, A, b):
        solution = cbf_qp(u_rl, A, b, low, high, DEFAULT_SLACK_WEIGHT)
        return jnp.sum(weights * solution), solution

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))
    return lambda: grad(problems["u_rl"], problems["A"], problems["b"])


def cvxpylayers_qp_layer(problems: dict) -> Callable[[], tuple] | str:
    """The same QP as a cvxpylayers layer (JAX interface, default backend: diffcp with SCS, batched over a
    thread pool) with the same solution and gradient, or why it is not available."""
    try:
        import cvxpy as cp
        from cvxpylayers.jax import CvxpyLayer
    except ImportError as exc:
        return f"cvxpylayers is not installed ({exc}); {CVXPYLAYERS_HINT} adds it"
    m, n = problems["A"].shape[1:]
    u, eps = cp.Variable(n), cp.Variable()
    u_rl, A, b = cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(u - u_rl) + DEFAULT_SLACK_WEIGHT * cp.square(eps)),
                         [A @ u >= b - eps, u >= problems["low"], u <= problems["high"]])
    layer = CvxpyLayer(problem, parameters=[u_rl, A, b], variables=[u])
    weights = problems["weights"]

    def loss(u_rl_, A_, b_):
        (solution,) = layer(u_rl_, A_, b_)
        return jnp.sum(weights * solution), solution

    grad = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)  # diffcp runs on the host: not jittable
    return lambda: grad(problems["u_rl"], problems["A"], problems["b"])


def bench_qp_layer(sizes: dict) -> list[dict[str, Any]]:
    """Batched QP-layer solves plus gradients per second, drorl's layer against cvxpylayers on the same
    instances (each safety task's CBF rows), with the largest differences of solution and gradient."""
    out = []
    for i, name in enumerate(sizes["qp_tasks"]):
        task = safety.get_safety_task(name)
        problems = qp_instances(task, sizes["qp_batch"], jax.random.PRNGKey(i))
        batch = sizes["qp_batch"]
        ours = drorl_qp_layer(problems)
        (grads_ours, u_ours) = jax.block_until_ready(ours())  # compiles
        row = {"task": name, "batch": batch, "rows": int(problems["A"].shape[1]), "controls": task.act_dim,
               "drorl_per_s": batch / seconds_per_call(ours, sizes["min_seconds"], warm_up=False)}
        peer = cvxpylayers_qp_layer(problems)
        if isinstance(peer, str):
            row.update({"peer": None, "peer_missing": peer})
        else:
            (grads_peer, u_peer) = jax.block_until_ready(peer())  # runs on the host: nothing to compile
            row["peer"] = "cvxpylayers (diffcp, SCS)"
            row["peer_per_s"] = batch / seconds_per_call(peer, sizes["min_seconds"], min_calls=1, warm_up=False)
            row["speedup"] = row["drorl_per_s"] / row["peer_per_s"]
            row["max_solution_difference"] = float(jnp.max(jnp.abs(u_ours - u_peer)))
            row["max_gradient_difference"] = max(float(jnp.max(jnp.abs(g - h))) for g, h in zip(grads_ours, grads_peer))
        out.append(row)
    return out


def bench_safety_envs(sizes: dict) -> list[dict[str, Any]]:
    """Environment steps/s: every env of a batch stepped together for a whole episode in one compiled
    program (``safety.rollouts``, random actions; finished episodes are still stepped and counted, as the
    program computes them) against the Gymnasium wrapper stepped one env at a time."""
    import gymnasium

    out = []
    for name in sizes["env_tasks"]:
        task = safety.get_safety_task(name)
        low, high = jnp.asarray(task.action_low), jnp.asarray(task.action_high)

        def policy(obs, k):
            return jax.random.uniform(k, (obs.shape[0], task.act_dim), minval=low, maxval=high)

        keys = jax.random.split(jax.random.PRNGKey(0), sizes["envs"])
        batched = jax.jit(lambda ks: safety.rollouts(task, policy, ks))
        t_batched = seconds_per_call(lambda: batched(keys), sizes["min_seconds"])
        env = gymnasium.make(task.gym_id)
        env.reset(seed=0)
        env.action_space.seed(0)
        env.step(env.action_space.sample())  # compiles the wrapper's step

        def one_env():
            env.reset(seed=0)
            for _ in range(sizes["gym_steps"]):
                _, _, term, trunc, _ = env.step(env.action_space.sample())
                if term or trunc:
                    env.reset()

        t_one = seconds_per_call(one_env, sizes["min_seconds"])
        env.close()
        steps_batched = sizes["envs"] * task.max_steps
        out.append({"task": name, "envs": sizes["envs"], "batched_steps_per_s": steps_batched / t_batched,
                    "one_env_steps_per_s": sizes["gym_steps"] / t_one,
                    "speedup": (steps_batched / t_batched) / (sizes["gym_steps"] / t_one)})
    return out


# ---------------------------------------------------------------------------------------------
# Stackelberg
# ---------------------------------------------------------------------------------------------


def leader_steps(state: stackelberg.State, data: dict, noise: jnp.ndarray, steps: int) -> tuple[Any, jnp.ndarray]:
    """``steps`` leader steps at the follower's fixed parameters (the leader's update inside
    ``stackelberg.update``); returns the policy and the CG iterations each step took (0 when simultaneous)."""
    def body(policy, _):
        grad, metrics = stackelberg.leader_gradient(state.replace(policy=policy), state.q.params, data, noise)
        iterations = metrics.get("cg_iterations", jnp.zeros(()))
        return policy.apply_gradients(jax.tree.map(jnp.negative, grad)), iterations

    return jax.lax.scan(body, state.policy, None, length=steps)


def follower_steps(state: stackelberg.State, data: dict, noise: jnp.ndarray, steps: int) -> Any:
    """``steps`` plain gradient steps of the follower's objective f2 (the U-statistic, as it trains)."""
    f2 = stackelberg.follower(state, data, noise)

    def body(q, _):
        q, _, _ = gradient_step(q, lambda phi: f2(state.policy.params, phi), has_aux=True)
        return q, None

    return jax.lax.scan(body, state.q, None, length=steps)[0]


def bench_leader_step(sizes: dict, dataset: Dataset) -> dict[str, Any]:
    """The leader step's cost for each CG budget k, relative to a plain gradient step of the follower's
    objective (the acceptance bound: k + 3 of them) and to the simultaneous leader's partial-gradient
    step; the marginal cost of one HVP from the first and last k."""
    config = stackelberg.Config()
    if sizes["small"] is not None:
        config = dataclasses.replace(config, policy_hidden_dims=sizes["small"], q_hidden_dims=sizes["small"],
                                     batch_size=32)
    spec = Spec.from_dataset(dataset)
    key = jax.random.PRNGKey(0)
    state = stackelberg.init(config, spec, key)
    batch = jax.jit(batch_sampler(stackelberg))(device_data(dataset), state, key)
    data = stackelberg.prepare_batch(state, batch)
    noise = jax.random.normal(jax.random.fold_in(key, 1), (3, config.batch_size, spec.act_dim))
    steps, min_seconds = sizes["leader_steps"], sizes["min_seconds"]

    def per_step(fn, variant):
        run = jax.jit(functools.partial(fn, steps=steps))
        return seconds_per_call(lambda: run(variant, data, noise), min_seconds) / steps

    t_follower = per_step(follower_steps, state)
    t_partial = per_step(leader_steps, state.replace(config=dataclasses.replace(config, simultaneous=True)))
    leaders = []
    for k in sizes["leader_iters"]:
        variant = state.replace(config=dataclasses.replace(config, cg_iters=k))
        seconds = per_step(leader_steps, variant)
        _, iterations = jax.jit(functools.partial(leader_steps, steps=steps))(variant, data, noise)
        ratio = seconds / t_follower
        leaders.append({"k": k, "cg_iterations": float(jnp.mean(iterations)), "seconds": seconds,
                        "follower_steps": ratio, "bound": k + 3, "within_bound": bool(ratio <= k + 3),
                        "partial_steps": seconds / t_partial})
    first, last = leaders[0], leaders[-1]
    hvp = ((last["seconds"] - first["seconds"]) / (last["cg_iterations"] - first["cg_iterations"]) / t_follower
           if last["cg_iterations"] > first["cg_iterations"] else float("nan"))
    return {"batch_size": config.batch_size, "hidden_dims": list(config.q_hidden_dims),
            "follower_curvature": config.follower_curvature, "follower_step_s": t_follower,
            "partial_step_s": t_partial, "leader": leaders, "hvp_in_follower_steps": hvp}


# ---------------------------------------------------------------------------------------------
# The benchmark's section and its tables
# ---------------------------------------------------------------------------------------------


def run(families: list[str], profile: str, dataset: Dataset, algorithm_rows: list[dict]) -> dict[str, Any]:
    """Every measurement of ``families`` at ``profile``'s sizes, with the rows of the family's registered
    algorithms that ``algorithm_rows`` has (those the benchmark ran)."""
    sizes = SIZES[profile]
    by_name = {r["algorithm"]: r for r in algorithm_rows}
    out: dict[str, Any] = {}
    for family in families:
        rows = [by_name[a] for a in FAMILY_ALGORITHMS[family] if a in by_name]
        if family == "model-based":
            out[family] = {"dynamics_training": bench_dynamics_training(sizes, first_rows(dataset, sizes["dynamics_rows"])),
                           "rollouts": bench_model_rollouts(sizes, dataset), "algorithms": rows}
        elif family == "safe-rl":
            out[family] = {"qp_layer": bench_qp_layer(sizes), "environments": bench_safety_envs(sizes),
                           "algorithms": rows}
        else:
            out[family] = {"leader_step": bench_leader_step(sizes, dataset), "algorithms": rows}
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _algorithm_table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(no algorithm rows: the run's --algos left this family's algorithms out)"]
    return _table(["algorithm", "updates/s", "GFLOP/s", "utilisation", "while loops counted"],
                  [[r["algorithm"], f"{r['updates_per_s']:,.1f}", f"{r['gflops']:.1f}", f"{100 * r['utilisation']:.0f} %",
                    "-" if not r.get("while_loops") else f"{r['while_loops']} x {r['while_trips']:g}"] for r in rows])


def tables(families: dict[str, Any]) -> list[str]:
    """Markdown lines: one section per family, each measurement beside its peer."""
    lines: list[str] = []
    if "model-based" in families:
        mb = families["model-based"]
        d = mb["dynamics_training"]
        lines += ["## Model-based", "",
                  f"Dynamics ensemble training ({d['members']} members, {'x'.join(map(str, d['hidden_dims']))}, "
                  f"{d['steps']} steps):", "",
                  *_table(["vectorised steps/s", "one member after another, steps/s", "speedup"],
                          [[f"{d['vectorised_steps_per_s']:,.1f}", f"{d['loop_steps_per_s']:,.1f}",
                            f"{d['speedup']:.2f}x"]]), "",
                  "Model rollouts (transitions/s):", "",
                  *_table(["starts", "horizon", "compiled scan", "per-step Python loop", "speedup", "same rows"],
                          [[f"{r['starts']:,}", str(r["horizon"]), f"{r['compiled_transitions_per_s']:,.0f}",
                            f"{r['loop_transitions_per_s']:,.0f}", f"{r['speedup']:.2f}x", str(r["same_rows"])]
                           for r in mb["rollouts"]]), "",
                  *_algorithm_table(mb["algorithms"]), ""]
    if "safe-rl" in families:
        sr = families["safe-rl"]
        qp_rows = []
        for r in sr["qp_layer"]:
            peer = ([f"{r['peer_per_s']:,.0f}", f"{r['speedup']:.1f}x",
                     f"{r['max_solution_difference']:.1e} / {r['max_gradient_difference']:.1e}"]
                    if r["peer"] else ["missing", "-", "-"])
            qp_rows.append([r["task"], f"{r['rows']} x {r['controls']}", f"{r['batch']:,}", f"{r['drorl_per_s']:,.0f}",
                            *peer])
        missing = {r["peer_missing"] for r in sr["qp_layer"] if not r["peer"]}
        lines += ["## Safe RL", "", "CBF-QP layer, batched solves plus gradients per second:", "",
                  *_table(["task", "rows x controls", "batch", "drorl", "cvxpylayers", "speedup",
                           "max difference u* / grad"], qp_rows), "",
                  *(f"cvxpylayers: {m}" for m in sorted(missing)), *([""] if missing else []),
                  "Safety systems, environment steps/s:", "",
                  *_table(["task", "envs", "batched (one program)", "Gymnasium, one env", "speedup"],
                          [[r["task"], f"{r['envs']:,}", f"{r['batched_steps_per_s']:,.0f}",
                            f"{r['one_env_steps_per_s']:,.0f}", f"{r['speedup']:.0f}x"] for r in sr["environments"]]),
                  "", *_algorithm_table(sr["algorithms"]), ""]
    if "stackelberg" in families:
        st = families["stackelberg"]
        ls = st["leader_step"]
        lines += ["## Stackelberg", "",
                  f"Leader step (CG with k HVPs of the {ls['follower_curvature']} curvature) in plain gradient steps "
                  f"of the follower's objective ({1e3 * ls['follower_step_s']:.2f} ms) and of the leader's partial "
                  f"gradient ({1e3 * ls['partial_step_s']:.2f} ms); batch {ls['batch_size']}:", "",
                  *_table(["k", "CG iterations", "ms", "follower steps", "bound k + 3", "partial steps"],
                          [[str(r["k"]), f"{r['cg_iterations']:.1f}", f"{1e3 * r['seconds']:.2f}",
                            f"{r['follower_steps']:.2f}", str(r["bound"]), f"{r['partial_steps']:.1f}"]
                           for r in ls["leader"]]), "",
                  *([f"One HVP costs {ls['hvp_in_follower_steps']:.2f} follower gradient steps (from the first and "
                     "last k).", ""] if math.isfinite(ls["hvp_in_follower_steps"]) else []),
                  *_algorithm_table(st["algorithms"]), ""]
    return lines
