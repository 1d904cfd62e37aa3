"""Throughput benchmark (performance.md): updates/s and FLOP utilisation per algorithm, seeds under
vmap against sequential runs, sweep evaluation against a one-env loop, peak memory for 1M transitions.

    python -m tools.throughput            # full profile, writes tools/results/throughput-<host>.json
    python -m tools.throughput --quick    # a few minutes
    python -m tools.throughput --smoke    # seconds: what the test suite runs

Utilisation = FLOPs per update (XLA's cost analysis of the compiled update, plus the matrix products of
its loops' further iterations, which that analysis counts once) x updates/s / the float32 matmul peak
measured in the same process a few seconds before. For offline algorithms it also runs
``drorl.train.train`` at two lengths and reports the loop's rate against the in-process one
(``train_loop_fraction``, wall clock; ``train_loop_cpu_fraction``, process CPU time), pooled over
pairs of runs (``train_loop_rate``). The model-based, safe-RL and Stackelberg families add their own items, each
beside its peer (``tools.throughput_families``; ``--families``). Writes JSON and a markdown report beside
it. Absolute numbers vary by machine; quote the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.table import Table

from drorl import algos
from drorl.algos.base import Spec
from drorl.data.dataset import Dataset
from drorl.io_utils import write_bytes_atomic, write_json_atomic
from drorl.train import batch_sampler, device_data, init_states, make_train_chunk, policy_fn
from tools import throughput_families

PROFILES = {
    # call_seconds: each algorithm's compiled call runs as many updates (between min_updates and
    # max_updates) as take about this long at 60 % of the matmul peak (analytic FLOPs), so a 2 GFLOP
    # BCQ update and a 0.1 GFLOP BC update cost the benchmark the same time; calls: timed calls.
    # loop_calls: the two lengths of a timed ``drorl.train`` run, in calls; loop_pairs: how many pairs of
    # them, even, so that each order of the two lengths comes as often (train_loop_rate).
    "smoke": dict(call_seconds=0.0, min_updates=20, max_updates=20, calls=2, matmul=(256,), eval_points=1,
                  eval_episodes=1, max_steps=50, seeds=2, loop_calls=(1, 2), loop_pairs=2),
    "quick": dict(call_seconds=0.5, min_updates=5, max_updates=1000, calls=5, matmul=(256, 1024), eval_points=9,
                  eval_episodes=10, max_steps=1000, seeds=5, loop_calls=(2, 10), loop_pairs=4),
    "full": dict(call_seconds=1.5, min_updates=50, max_updates=5000, calls=5, matmul=(256, 1024, 2048),
                 eval_points=9, eval_episodes=20, max_steps=1000, seeds=5, loop_calls=(2, 10), loop_pairs=6),
}
EXPECTED_UTILISATION = 0.6  # only sizes the calls; the measured utilisation is what is reported
# Hopper-sized problems: 11 observations, 3 actions.
OBS_DIM, ACT_DIM = 11, 3


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "device": str(jax.devices()[0]),
            "jax": jax.__version__, "python": platform.python_version()}


def seconds_per_call(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Wall-clock and process CPU seconds (every thread's, XLA's included) per call of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        jax.block_until_ready(fn())
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Seconds per call of ``fn`` after one warm-up call (which also compiles)."""
    jax.block_until_ready(fn())
    return seconds_per_call(fn, repeats)[0]


def matmul_peak(sizes: tuple[int, ...]) -> dict[str, float]:
    """GFLOP/s of a jitted float32 n x n matrix product, per size; 'peak' is the best."""
    out = {}
    for n in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
        matmul = jax.jit(lambda x, y: x @ y)
        seconds = timed(lambda: matmul(a, b), max(3, int(2e10 / (2 * n**3))))
        out[f"matmul_{n}"] = 2 * n**3 / seconds / 1e9
    out["peak"] = max(out.values())
    return out


def batched_matmul_ceiling(n: int = 256, batch: int = 5) -> dict[str, float]:
    """GFLOP/s of ``batch`` independent n x n products in one batched call (what vmap compiles a
    seed-stacked layer to), and of one such product alone. An update that already runs at G GFLOP/s
    for one seed can gain at most batched_gflops / G from vmap over seeds."""
    key = jax.random.PRNGKey(0)
    a, b = jax.random.normal(key, (batch, n, n)), jax.random.normal(jax.random.fold_in(key, 1), (batch, n, n))
    single, batched = jax.jit(lambda x, y: x @ y), jax.jit(jax.vmap(lambda x, y: x @ y))
    repeats = max(3, int(1e10 / (2 * batch * n**3)))
    t_single = timed(lambda: single(a[0], b[0]), repeats * batch)
    t_batched = timed(lambda: batched(a, b), repeats)
    return {"single_gflops": 2 * n**3 / t_single / 1e9, "batched_gflops": 2 * batch * n**3 / t_batched / 1e9,
            "ceiling": t_single * batch / t_batched, "n": n, "batch": batch}


def _sub_jaxprs(value: Any) -> list[Any]:
    """The jaxprs held in one equation parameter (a closed jaxpr, a jaxpr, or a tuple of them)."""
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _sub_jaxprs(v)]
    if hasattr(value, "eqns"):
        return [value]
    return [value.jaxpr] if hasattr(getattr(value, "jaxpr", None), "eqns") else []


def matmul_flops(jaxpr: Any, while_trips: float | None) -> float:
    """Matrix-product FLOPs of a jaxpr (2 x output size x contracted size per ``dot_general``), scans
    counted at their length and while loops at ``while_trips`` iterations; ``while_trips=None`` counts
    every loop body once, as XLA's cost analysis does."""
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contracting)
            continue
        inner = [matmul_flops(j, while_trips) for v in eqn.params.values() for j in _sub_jaxprs(v)]
        if eqn.primitive.name == "cond":
            total += max(inner)
            continue
        repeats = 1.0
        if while_trips is not None and eqn.primitive.name == "scan":
            repeats = eqn.params["length"]
        elif while_trips is not None and eqn.primitive.name == "while":
            repeats = while_trips
        total += repeats * sum(inner)
    return total


def count_while_loops(jaxpr: Any) -> int:
    return sum((eqn.primitive.name == "while") + sum(count_while_loops(j) for v in eqn.params.values()
                                                     for j in _sub_jaxprs(v)) for eqn in jaxpr.eqns)


@dataclasses.dataclass(frozen=True)
class UpdateCost:
    """FLOPs of one update: XLA's cost analysis of the compiled update (everything, optimiser and
    elementwise work included) counts a loop's body once whatever its length, so the matrix products
    of a loop's further iterations are added from the update's jaxpr (a rollout's scan, a CG solve)."""

    xla_flops: float
    jaxpr: Any

    @property
    def while_loops(self) -> int:
        return count_while_loops(self.jaxpr)

    def flops(self, while_trips: float = 1.0) -> float:
        """With each while loop run ``while_trips`` times (data-dependent: 1 is a lower bound)."""
        return self.xla_flops + matmul_flops(self.jaxpr, while_trips) - matmul_flops(self.jaxpr, None)


def update_cost(algo: Any, config: Any, spec: Spec, data: dict) -> UpdateCost:
    """The cost of one update (one seed, one batch drawn as the loop draws it), compiled on its own."""
    states, rngs = init_states(algo, config, spec, [0])
    state = jax.tree_util.tree_map(lambda x: x[0], states)
    batch = jax.jit(batch_sampler(algo))(data, state, rngs[0])
    compiled = jax.jit(algo.update).lower(state, batch, rngs[0]).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return UpdateCost(float(analysis["flops"]), jax.make_jaxpr(algo.update)(state, batch, rngs[0]).jaxpr)


def synthetic_dataset(n: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS_DIM)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[999::1000] = True
    return Dataset.from_arrays({
        "observations": obs, "actions": np.tanh(rng.normal(size=(n, ACT_DIM))).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32), "next_observations": obs,
        "terminals": np.zeros(n, bool), "timeouts": timeouts})


def updates_per_call(flops: float, peak_gflops: float, profile: dict) -> int:
    """Updates that take about ``call_seconds`` at the expected utilisation, within the profile's bounds."""
    guess = profile["call_seconds"] * EXPECTED_UTILISATION * peak_gflops * 1e9 / flops
    return int(min(profile["max_updates"], max(profile["min_updates"], round(guess))))


def benchmarked_algorithm(name: str) -> tuple[Any, Any]:
    """The module-like object the training loop calls, and its config. An estimator (DualDICE) is
    benchmarked as an off-policy evaluator of a small tanh-Gaussian policy sampled inside the program."""
    if algos.entry(name).kind != "estimator":
        algo = algos.get(name)
        return algo, algo.Config()
    from types import SimpleNamespace

    from drorl.algos import dualdice
    from drorl.nn.policies import TanhGaussianPolicy, tanh_gaussian_sample
    from drorl.ope import for_target_policy

    policy = TanhGaussianPolicy((256, 256), ACT_DIM)
    params = policy.init(jax.random.PRNGKey(0), jnp.zeros((1, OBS_DIM)))

    def target_policy(obs, key):
        return tanh_gaussian_sample(*policy.apply(params, obs), key)

    return SimpleNamespace(init=dualdice.init, **vars(for_target_policy(target_policy))), dualdice.Config()


def benchmark_problem(name: str, dataset: Dataset) -> tuple[Dataset, Spec]:
    """The data and spec an algorithm is timed on: the hopper-sized synthetic dataset (read as two discrete
    actions by an algorithm without continuous ones), or, for an algorithm bound to particular tasks (DSRL's
    safety layer), as many random-action transitions of its first task."""
    entry = algos.entry(name)
    if entry.tasks:
        from drorl.online import online_spec
        from tools.throughput_families import safety_dataset

        return safety_dataset(entry.tasks[0], len(dataset)), online_spec(entry.tasks[0])
    return dataset, Spec.from_dataset(dataset, num_actions=None if "continuous" in entry.action_spaces else 2)


def bench_algorithm(name: str, profile: dict, peak: float, dataset: Dataset) -> dict[str, Any]:
    algo, config = benchmarked_algorithm(name)
    dataset, spec = benchmark_problem(name, dataset)
    data = device_data(dataset)
    cost = update_cost(algo, config, spec, data)
    k, calls, n_seeds = updates_per_call(cost.flops(), peak, profile), profile["calls"], profile["seeds"]
    metrics_seen: list[dict] = []

    def runner(seeds: list[int]) -> tuple[Callable[[], Any], float]:
        """A call running k updates for ``seeds``, and the seconds its compilation took."""
        carry = list(init_states(algo, config, spec, seeds))
        start = time.perf_counter()
        chunk = make_train_chunk(algo, k).lower(*carry, data).compile()
        compile_seconds = time.perf_counter() - start

        def call():
            carry[0], carry[1], metrics = chunk(carry[0], carry[1], data)
            metrics_seen[:] = [metrics]
            return metrics

        return call, compile_seconds

    one, compile_seconds = runner([0])
    single = timed(one, calls)
    # a CG solve's iterations depend on the data: the update reports them, and its while loop counts that often
    while_trips = float(np.mean(metrics_seen[0]["cg_iterations"])) if "cg_iterations" in metrics_seen[0] else 1.0
    flops = cost.flops(while_trips)
    many = timed(runner(list(range(n_seeds)))[0], calls)
    ups = k / single
    row = {
        "algorithm": name, "flops_per_update": flops, "xla_flops_per_update": cost.xla_flops,
        "while_loops": cost.while_loops, "while_trips": while_trips, "updates_per_call": k,
        "updates_per_s": ups, "gflops": flops * ups / 1e9, "utilisation": flops * ups / 1e9 / peak,
        "compile_s": compile_seconds,
        "seeds": n_seeds, "vmap_updates_per_s": n_seeds * k / many,
        "sequential_updates_per_s": ups, "vmap_speedup": (n_seeds * k / many) / ups,
    }
    if algos.entry(name).kind == "offline":
        row.update(train_loop_rate(name, config, dataset, spec, k, profile, one))
    return row


def nested_configs(config: Any, kind: type) -> list[Any]:
    """Every ``kind`` dataclass in ``config``'s tree of nested config dataclasses, ``config`` included."""
    if isinstance(config, kind):
        return [config]
    if not dataclasses.is_dataclass(config):
        return []
    return [found for f in dataclasses.fields(config) for found in nested_configs(getattr(config, f.name), kind)]


def cache_untrained_dynamics(config: Any, dataset: Dataset, directory: Path) -> None:
    """Put an untrained ensemble where a model-based algorithm's ``prepare`` looks for its trained one, so
    that a timed run reads it instead of training one (an ensemble's fit does not change an update's cost)."""
    from drorl.algos.model_based import ModelConfig
    from drorl.nn import dynamics

    for model_config in nested_configs(config, ModelConfig):
        path = dynamics.cache_path(directory, model_config.dynamics, dataset, model_config.model_seed)
        dynamics.save(path, dynamics.init(model_config.dynamics, dataset.obs_dim, dataset.act_dim,
                                          jax.random.PRNGKey(model_config.model_seed)))
        write_json_atomic(path.with_suffix(".json"), {"untrained": True, "written_by": "tools.throughput"})


def train_loop_rate(name: str, config: Any, dataset: Dataset, spec: Spec, k: int, profile: dict,
                    chunk_call: Callable[[], Any]) -> dict[str, Any]:
    """Updates/s of a real ``drorl.train.train`` run (one seed, k updates per call, metrics, health checks
    and checkpoints as a user's run has them) against ``chunk_call``'s (the benchmark's compiled call of k
    updates), each from the difference of two run lengths so that start-up and compilation cancel. A
    model-based algorithm reads an untrained ensemble (cache_untrained_dynamics).

    The machine's load drifts, so each of ``loop_pairs`` pairs re-times ``chunk_call`` just before its two
    runs; the pairs alternate the order of the two lengths, so that a constant penalty on the run that comes
    first or second (caches it warms, garbage it leaves) cancels. The fractions pool the pairs: the
    in-process time of the extra updates over the runs' extra time,
    each summed over the pairs, in wall clock and in process CPU time (which time slices lost to other
    processes do not inflate). Each pair's own fraction is kept to show the spread. An untimed run comes
    first: the first run in a process also compiles the jitted helpers every run shares."""
    import tempfile

    from drorl.train import RunSettings, train

    short, long = profile["loop_calls"]
    # [wall, CPU] seconds summed over the pairs: the in-process call's for the extra updates, the runs' extra
    chunk, extra = np.zeros(2), np.zeros(2)
    per_pair = []
    with tempfile.TemporaryDirectory() as tmp:
        cache_untrained_dynamics(config, dataset, Path(tmp) / "prepared")

        def run_seconds(calls: int, run_dir: Path) -> np.ndarray:
            settings = RunSettings(steps=calls * k, seeds=(0,), updates_per_call=k, checkpoint_every=10_000)
            wall, cpu = time.perf_counter(), time.process_time()
            train(name, dataset, run_dir, settings, config=config, spec=spec, progress=False,
                  prepared_dir=Path(tmp) / "prepared")
            return np.array([time.perf_counter() - wall, time.process_time() - cpu])

        run_seconds(short, Path(tmp) / "first")  # untimed: the one-time costs of a process's first run
        for pair in range(profile["loop_pairs"]):
            pair_chunk = (long - short) * np.array(seconds_per_call(chunk_call, profile["calls"]))
            order = (short, long) if pair % 2 == 0 else (long, short)
            seconds = {calls: run_seconds(calls, Path(tmp) / f"run{pair}-{calls}") for calls in order}
            pair_extra = seconds[long] - seconds[short]
            chunk, extra = chunk + pair_chunk, extra + pair_extra
            per_pair.append(fractions(pair_chunk, pair_extra))
    wall_fraction, cpu_fraction = fractions(chunk, extra)
    return {"train_loop_updates_per_s": (long - short) * k * profile["loop_pairs"] / extra[0] if extra[0] > 0
            else float("nan"), "train_loop_fraction": wall_fraction, "train_loop_cpu_fraction": cpu_fraction,
            "train_loop_fractions": [f[0] for f in per_pair], "train_loop_cpu_fractions": [f[1] for f in per_pair],
            "train_loop_runs": [short * k, long * k]}


def fractions(chunk: np.ndarray, extra: np.ndarray) -> tuple[float, float]:
    """In-process seconds over the loop's for the same updates (wall, CPU); NaN where the runs' difference
    was lost in noise (at smoke sizes it can exceed the extra work)."""
    return tuple(float(c / e) if e > 0 else float("nan") for c, e in zip(chunk, extra))


def loop_cell(row: dict[str, Any]) -> str:
    """The 'drorl train' column: the loop's rate as a share of the in-process one, wall clock / CPU time;
    '-' where ``drorl train`` does not run the algorithm (online algorithms, estimators)."""
    if "train_loop_fraction" not in row:
        return "-"
    return f"{100 * row['train_loop_fraction']:.0f} % / {100 * row['train_loop_cpu_fraction']:.0f} %"


def bench_evaluation(profile: dict) -> dict[str, Any]:
    """Episodes/s of a hopper perturbation sweep: batched envs and inference vs the one-env loop."""
    from drorl.envs.perturbations import Perturbation
    from drorl.evaluate import run_episodes, run_episodes_one_env

    algo = algos.get("bc")
    dataset = synthetic_dataset(2000)
    states, _ = init_states(algo, algo.Config(), Spec.from_dataset(dataset), [0])
    batched = policy_fn(algo, states)
    single = jax.jit(lambda obs: algo.act(jax.tree_util.tree_map(lambda x: x[0], states), obs[None],
                                          jax.random.PRNGKey(0), True)[0])
    points = [Perturbation("gravity", p) for p in np.linspace(0, 0.2, profile["eval_points"])]
    episodes, max_steps = profile["eval_episodes"], profile["max_steps"]
    run_episodes(batched, 1, "hopper", points, episodes, max_steps=2)  # compile at the timed batch width
    start = time.perf_counter()
    ret_b = run_episodes(batched, 1, "hopper", points, episodes, max_steps=max_steps)
    t_batched = time.perf_counter() - start
    single(np.zeros(OBS_DIM, np.float32))
    start = time.perf_counter()
    ret_s = np.stack([run_episodes_one_env(lambda o: np.asarray(single(o)), "hopper", p, episodes,
                                           max_steps=max_steps) for p in points])
    t_single = time.perf_counter() - start
    n = len(points) * episodes
    return {"episodes": n, "batched_episodes_per_s": n / t_batched, "one_env_episodes_per_s": n / t_single,
            "speedup": t_single / t_batched, "same_returns": bool(np.allclose(ret_b[0], ret_s, atol=1e-3))}


def memory_probe() -> None:
    """Child process: a 1M-transition hopper-sized dataset on the device and BC training on it."""
    dataset = synthetic_dataset(1_000_000)
    algo = algos.get("bc")
    config = algo.Config()
    data = device_data(dataset)
    carry = init_states(algo, config, Spec.from_dataset(dataset), [0, 1, 2, 3, 4])
    chunk = make_train_chunk(algo, 100)
    jax.block_until_ready(chunk(*carry, data))
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM, which belongs to the process image. (``ru_maxrss``
    survives exec on Linux, so a child started from a big parent would report the parent's peak.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_memory() -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "tools.throughput", "--memory-probe"],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown_report(result: dict[str, Any]) -> list[str]:
    """The algorithm table and the one-line measurements as markdown (the family tables follow it)."""
    peak, ceiling, evaluation = result["matmul_gflops"]["peak"], result["vmap_ceiling"], result["evaluation"]
    lines = [f"# Throughput ({result['profile']}; {result['machine']['cpu']}, {result['machine']['cores']} cores, "
             f"JAX {result['machine']['jax']})", "",
             f"float32 matmul peak {peak:.0f} GFLOP/s; {ceiling['batch']} batched {ceiling['n']}x{ceiling['n']} "
             f"products {ceiling['batched_gflops']:.0f} GFLOP/s (one alone {ceiling['single_gflops']:.0f}).", "",
             "| algorithm | updates/s | GFLOP/s | utilisation | compile s | vmap x{} | vmap bound | drorl train |".format(
                 result["settings"]["seeds"]), "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["algorithms"]:
        loop = loop_cell(r)
        lines.append(f"| {r['algorithm']} | {r['updates_per_s']:,.0f} | {r['gflops']:.1f} | "
                     f"{100 * r['utilisation']:.0f} % | {r['compile_s']:.2f} | {r['vmap_speedup']:.2f}x | "
                     f"{r['vmap_bound']:.2f}x | {loop} |")
    lines += ["", "drorl train: a real training run's updates/s over the in-process rate above, wall clock / process "
              f"CPU time, pooled over {result['settings']['loop_pairs']} pairs of runs of "
              f"{' and '.join(map(str, result['settings']['loop_calls']))} calls (their difference, so that start-up "
              "and compilation cancel); '-': an online algorithm or an estimator, which `drorl train` does not run.",
              "", f"Sweep evaluation: {evaluation['batched_episodes_per_s']:.2f} episodes/s batched vs "
              f"{evaluation['one_env_episodes_per_s']:.2f} one-env ({evaluation['speedup']:.1f}x).", ""]
    if result["memory_1m_transitions"]:
        lines += [f"Peak memory, 1M transitions + 5-seed BC: {result['memory_1m_transitions']['peak_rss_mb']:.0f} MB.", ""]
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick profile (a few minutes)")
    parser.add_argument("--smoke", action="store_true", help="seconds; checks that everything runs")
    parser.add_argument("--algos", default=",".join(algos.names()), help="comma-separated registered algorithms")
    parser.add_argument("--families", default=",".join(throughput_families.FAMILIES),
                        help="comma-separated families whose own items run (model-based, safe-rl, stackelberg); "
                             "'' for none")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write (a markdown file beside it)")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(throughput_families.FAMILIES))
    if unknown:
        parser.error(f"--families: unknown {', '.join(unknown)}; expected some of "
                     f"{', '.join(throughput_families.FAMILIES)}")
    if args.memory_probe:
        memory_probe()
        return {}
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    profile = PROFILES[name]
    console = Console()
    peak = matmul_peak(profile["matmul"])
    ceiling = batched_matmul_ceiling(batch=profile["seeds"])
    dataset = synthetic_dataset(100_000 if name != "smoke" else 5_000)
    rows = [bench_algorithm(a, profile, peak["peak"], dataset) for a in args.algos.split(",") if a]
    for r in rows:
        r["vmap_bound"] = ceiling["batched_gflops"] / r["gflops"]
    family_results = throughput_families.run(families, name, dataset, rows)
    evaluation = bench_evaluation(profile)
    memory = bench_memory() if name != "smoke" else None
    result = {"profile": name, "machine": machine(), "matmul_gflops": peak, "vmap_ceiling": ceiling,
              "algorithms": rows, "families": family_results,
              "evaluation": evaluation, "memory_1m_transitions": memory,
              "settings": {k: v for k, v in profile.items()}}

    table = Table(title=f"throughput ({name}; matmul peak {peak['peak']:.0f} GFLOP/s on {result['machine']['cpu']})")
    for col in ("algorithm", "updates/s", "GFLOP/s", "utilisation", "compile s", f"vmap x{profile['seeds']}",
                "vmap bound", "drorl train"):
        table.add_column(col, justify="right")
    for r in rows:
        loop = loop_cell(r)
        table.add_row(r["algorithm"], f"{r['updates_per_s']:,.0f}", f"{r['gflops']:.1f}",
                      f"{100 * r['utilisation']:.0f} %", f"{r['compile_s']:.2f}", f"{r['vmap_speedup']:.2f}x",
                      f"{r['vmap_bound']:.2f}x", loop)
    console.print(table)
    console.print("drorl train: a real run's updates/s over the in-process rate, wall clock / CPU time "
                  f"({profile['loop_pairs']} pairs of run lengths); '-': not run by `drorl train` (online, estimator)")
    console.print(f"vmap ceiling: {ceiling['batch']} batched {ceiling['n']}x{ceiling['n']} products run at "
                  f"{ceiling['batched_gflops']:.0f} GFLOP/s (one alone: {ceiling['single_gflops']:.0f}); the most "
                  "vmap can gain per algorithm is that rate over its one-seed GFLOP/s (column 'vmap bound')")
    console.print(f"sweep evaluation: {evaluation['batched_episodes_per_s']:.2f} episodes/s batched vs "
                  f"{evaluation['one_env_episodes_per_s']:.2f} one-env ({evaluation['speedup']:.1f}x)")
    if memory:
        console.print(f"peak memory, 1M transitions + 5-seed BC: {memory['peak_rss_mb']:.0f} MB")
    family_lines = throughput_families.tables(family_results)
    print("\n".join(family_lines))
    out = args.out or Path("tools/results") / f"throughput-{name}.json"
    write_json_atomic(out, result)
    write_bytes_atomic(out.with_suffix(".md"), ("\n".join(markdown_report(result) + family_lines) + "\n").encode())
    console.print(f"wrote {out} and {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
