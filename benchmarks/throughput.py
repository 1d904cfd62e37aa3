"""Throughput benchmark (performance.md): updates/s and FLOP utilisation per algorithm, seeds under
vmap against sequential runs, sweep evaluation against a one-env loop, peak memory for 1M transitions.

    python -m benchmarks.throughput            # full profile, writes benchmarks/results/throughput-<host>.json
    python -m benchmarks.throughput --quick    # a few minutes
    python -m benchmarks.throughput --smoke    # seconds: what the test suite runs

Utilisation = analytic FLOPs per update x updates/s / the float32 matmul peak measured in the same
process a few seconds before. Absolute numbers vary by machine; quote the ratios.
"""

from __future__ import annotations

import argparse
import json
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
from drorl.io_utils import write_json_atomic
from drorl.train import device_data, init_states, make_train_chunk, policy_fn

PROFILES = {
    # call_seconds: each algorithm's compiled call runs as many updates (between min_updates and
    # max_updates) as take about this long at 60 % of the matmul peak (analytic FLOPs), so a 2 GFLOP
    # BCQ update and a 0.1 GFLOP BC update cost the benchmark the same time; calls: timed calls.
    "smoke": dict(call_seconds=0.0, min_updates=20, max_updates=20, calls=2, matmul=(256,), eval_points=1,
                  eval_episodes=1, max_steps=50, seeds=2),
    "quick": dict(call_seconds=0.5, min_updates=20, max_updates=1000, calls=5, matmul=(256, 1024), eval_points=9,
                  eval_episodes=10, max_steps=1000, seeds=5),
    "full": dict(call_seconds=1.5, min_updates=50, max_updates=5000, calls=5, matmul=(256, 1024, 2048),
                 eval_points=9, eval_episodes=20, max_steps=1000, seeds=5),
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


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Seconds per call of ``fn`` after one warm-up call (which also compiles)."""
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn())
    return (time.perf_counter() - start) / repeats


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


def mlp_flops(dims: list[int]) -> int:
    """Multiply-adds x 2 of one forward pass of an MLP with layer widths ``dims`` (one sample)."""
    return 2 * sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def analytic_flops(name: str, config: Any) -> float:
    """FLOPs of one update, counting a training pass (forward + backward) as 3 forward passes."""
    if name in ("bc", "drbc", "be-droil"):
        out = ACT_DIM if config.policy == "deterministic" else 2 * ACT_DIM
        policy = mlp_flops([OBS_DIM, *config.hidden_dims, out])
        if name != "be-droil":
            return 3.0 * config.batch_size * policy
        q = mlp_flops([OBS_DIM + ACT_DIM, *config.q_hidden_dims, 1])
        # policy trained (3x) + its loss before the dual step + pi(s') (forward); Q trained at (s, a),
        # (s', a') and (s0, a0) (3x each) and evaluated again at (s, a), (s', a') for the new weights.
        return config.batch_size * (5 * policy + 11 * q)
    if name == "sac":
        critic = mlp_flops([OBS_DIM + ACT_DIM, *config.hidden_dims, 1]) * config.num_critics
        actor = mlp_flops([OBS_DIM, *config.hidden_dims, 2 * ACT_DIM])
        # critic step: target critics + actor at s' (forward), critics trained (3x);
        # actor step: actor trained (3x), critics forward + backward to the actions (~2x).
        return config.batch_size * ((critic + actor) + 3 * critic + 3 * actor + 2 * critic)
    if name == "bcq-ovr":
        from drorl.algos.ovr import _base_config

        base = analytic_flops("bcq", _base_config(config))
        nu = mlp_flops([OBS_DIM + ACT_DIM, *config.dice_hidden_dims, 1])
        dec = mlp_flops([OBS_DIM + 2 * ACT_DIM, *config.vae_hidden_dims, ACT_DIM])
        actor = mlp_flops([OBS_DIM + ACT_DIM, *config.hidden_dims, ACT_DIM])
        critic = mlp_flops([OBS_DIM + ACT_DIM, *config.hidden_dims, 1])
        # BCQ's update + its acting at s' and s0 (n candidates each) + DualDICE: nu at three inputs and
        # zeta trained (3x each), then zeta once more for the ratios.
        acting = 2 * config.num_samples * (dec + actor + critic)
        return base + config.batch_size * (acting + 3 * 3 * nu + 3 * nu + nu)
    if name == "bcq":
        latent = 2 * ACT_DIM
        enc = mlp_flops([OBS_DIM + ACT_DIM, *config.vae_hidden_dims, 2 * latent])
        dec = mlp_flops([OBS_DIM + latent, *config.vae_hidden_dims, ACT_DIM])
        actor = mlp_flops([OBS_DIM + ACT_DIM, *config.hidden_dims, ACT_DIM])
        critic = mlp_flops([OBS_DIM + ACT_DIM, *config.hidden_dims, 1])
        n = config.num_samples
        # VAE trained (3x); n decoded, perturbed next actions scored by 2 target critics; 2 critics
        # trained (3x); actor step: decode, actor trained (3x), critic 1 forward + backward (~2x).
        return config.batch_size * (3 * (enc + dec) + n * (dec + actor + 2 * critic) + 6 * critic
                                    + dec + 3 * actor + 2 * critic)
    if name == "dualdice":
        net = mlp_flops([OBS_DIM + ACT_DIM, *config.hidden_dims, 1])
        policy = mlp_flops([OBS_DIM, 256, 256, 2 * ACT_DIM])
        # the target policy sampled at s' and s0 (forward); nu at three inputs and zeta at one, trained (3x).
        return config.batch_size * (2 * policy + 3 * 3 * net + 3 * net)
    if name == "dqn":
        q_net = mlp_flops([OBS_DIM, *config.hidden_dims, 2])
        # Q trained (3x) plus online and target networks forward at s' (double-Q target).
        return config.batch_size * 5 * q_net
    raise KeyError(f"no FLOP count for {name!r}: add it to analytic_flops")


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
    """The module-like object the training loop calls, and its config. DualDICE is benchmarked as an
    off-policy evaluator of a small tanh-Gaussian policy sampled inside the program."""
    if name != "dualdice":
        algo = algos.get(name)
        return algo, algo.Config()
    from types import SimpleNamespace

    from drorl.algos import dualdice
    from drorl.nn.policies import TanhGaussianPolicy, tanh_gaussian_sample

    policy = TanhGaussianPolicy((256, 256), ACT_DIM)
    params = policy.init(jax.random.PRNGKey(0), jnp.zeros((1, OBS_DIM)))

    def target_policy(obs, key):
        return tanh_gaussian_sample(*policy.apply(params, obs), key)

    return SimpleNamespace(init=dualdice.init, **vars(dualdice.for_target_policy(target_policy))), dualdice.Config()


def bench_algorithm(name: str, profile: dict, peak: float, dataset: Dataset) -> dict[str, Any]:
    algo, config = benchmarked_algorithm(name)
    spec = Spec.from_dataset(dataset)
    data = device_data(dataset)
    flops = analytic_flops(name, config)
    k, calls, n_seeds = updates_per_call(flops, peak, profile), profile["calls"], profile["seeds"]

    def runner(seeds: list[int]) -> tuple[Callable[[], Any], float]:
        """A call running k updates for ``seeds``, and the seconds its compilation took."""
        carry = list(init_states(algo, config, spec, seeds))
        start = time.perf_counter()
        chunk = make_train_chunk(algo, config.batch_size, k).lower(*carry, data).compile()
        compile_seconds = time.perf_counter() - start

        def call():
            carry[0], carry[1], metrics = chunk(carry[0], carry[1], data)
            return metrics

        return call, compile_seconds

    one, compile_seconds = runner([0])
    single = timed(one, calls)
    many = timed(runner(list(range(n_seeds)))[0], calls)
    ups = k / single
    return {
        "algorithm": name, "batch_size": config.batch_size, "flops_per_update": flops, "updates_per_call": k,
        "updates_per_s": ups, "gflops": flops * ups / 1e9, "utilisation": flops * ups / 1e9 / peak,
        "compile_s": compile_seconds,
        "seeds": n_seeds, "vmap_updates_per_s": n_seeds * k / many,
        "sequential_updates_per_s": ups, "vmap_speedup": (n_seeds * k / many) / ups,
    }


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
    chunk = make_train_chunk(algo, config.batch_size, 100)
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
    out = subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--memory-probe"],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick profile (a few minutes)")
    parser.add_argument("--smoke", action="store_true", help="seconds; checks that everything runs")
    parser.add_argument("--algos", default=",".join([*algos.names(), "dualdice"]),
                        help="comma-separated algorithm names (registered ones and dualdice)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
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
    evaluation = bench_evaluation(profile)
    memory = bench_memory() if name != "smoke" else None
    result = {"profile": name, "machine": machine(), "matmul_gflops": peak, "vmap_ceiling": ceiling,
              "algorithms": rows,
              "evaluation": evaluation, "memory_1m_transitions": memory,
              "settings": {k: v for k, v in profile.items()}}

    table = Table(title=f"throughput ({name}; matmul peak {peak['peak']:.0f} GFLOP/s on {result['machine']['cpu']})")
    for col in ("algorithm", "updates/s", "GFLOP/s", "utilisation", "compile s", f"vmap x{profile['seeds']}",
                "vmap bound"):
        table.add_column(col, justify="right")
    for r in rows:
        r["vmap_bound"] = ceiling["batched_gflops"] / r["gflops"]
        table.add_row(r["algorithm"], f"{r['updates_per_s']:,.0f}", f"{r['gflops']:.1f}",
                      f"{100 * r['utilisation']:.0f} %", f"{r['compile_s']:.2f}", f"{r['vmap_speedup']:.2f}x",
                      f"{r['vmap_bound']:.2f}x")
    console.print(table)
    console.print(f"vmap ceiling: {ceiling['batch']} batched {ceiling['n']}x{ceiling['n']} products run at "
                  f"{ceiling['batched_gflops']:.0f} GFLOP/s (one alone: {ceiling['single_gflops']:.0f}); the most "
                  "vmap can gain per algorithm is that rate over its one-seed GFLOP/s (column 'vmap bound')")
    console.print(f"sweep evaluation: {evaluation['batched_episodes_per_s']:.2f} episodes/s batched vs "
                  f"{evaluation['one_env_episodes_per_s']:.2f} one-env ({evaluation['speedup']:.1f}x)")
    if memory:
        console.print(f"peak memory, 1M transitions + 5-seed BC: {memory['peak_rss_mb']:.0f} MB")
    out = args.out or Path("benchmarks/results") / f"throughput-{name}.json"
    write_json_atomic(out, result)
    console.print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
