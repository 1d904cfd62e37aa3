"""The one execution engine of sweeps and benchmark suites: a list of work items, each run by a top-level
function, in this process, on a local pool of fresh processes, or as Ray tasks, under one progress bar.

Items and results must pickle (a sweep's cells are JSON-able dicts, a suite's jobs frozen dataclasses). A
pool worker and a Ray task hold to one XLA compute thread (a pool worker also to its share of the cores), so
an item computes the same numbers whichever of the two runs it. Running in this process (a local backend
without ``workers``) keeps XLA's own threads: that is how the committed benchmark results were made, so
it is the suites' default. Items already done are not run again: their work function, which for a
finished item checks and reads what the item left on disk (a suite's loads the job's data to check the
run against it) and trains nothing, gives their results here.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Sequence

from drorl.errors import DrorlError

# one XLA CPU compute thread per worker; BLAS/OpenMP libraries likewise
SINGLE_THREAD_XLA_FLAG = "--xla_cpu_multi_thread_eigen=false"
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
# what a local Ray instance's workers need from this process's environment: the data and JAX's compilation cache
FORWARDED_ENV = ("DRORL_DATA", "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
BACKENDS = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class Backend:
    """Where work items run.

    Attributes:
        name: ``local`` (this machine) or ``ray`` (a Ray cluster, or a local Ray instance).
        workers: local: the number of worker processes, each pinned to its share of the cores with one XLA
            thread; None: no pool, the items run one after another in this process.
        address: ray: the cluster's address (None: start Ray here, or use the one the caller started).
        gpus_per_item: ray: the GPUs each item asks for.
    """

    name: str = "local"
    workers: int | None = None
    address: str | None = None
    gpus_per_item: float = 0.0

    def __post_init__(self):
        if self.name not in BACKENDS:
            raise DrorlError(f"--backend {self.name}: expected {' or '.join(BACKENDS)}")
        if self.workers is not None and self.workers <= 0:
            raise DrorlError(f"--workers {self.workers}: expected a positive number")
        if self.name == "ray" and self.workers is not None:
            raise DrorlError(f"--workers {self.workers}: a local pool's size; Ray sizes its own (one CPU per item)")


def pinned_env(environ: dict[str, str]) -> dict[str, str]:
    """The variables that hold a worker to one XLA compute thread, keeping any XLA_FLAGS of ``environ``."""
    flags = " ".join(filter(None, [environ.get("XLA_FLAGS"), SINGLE_THREAD_XLA_FLAG]))
    return {**SINGLE_THREAD_ENV, "XLA_FLAGS": flags}


def pin_worker(shares: Any) -> None:
    """Pool initialiser: take a share of the cores from the queue ``shares``, run on those alone with one XLA
    compute thread (set before this fresh process first uses JAX, which reads XLA_FLAGS then), and draw no
    progress bars (the parent draws the one bar; workers' bars would overwrite each other)."""
    from drorl.progress import silence

    os.environ.update(pinned_env(dict(os.environ)))
    os.sched_setaffinity(0, shares.get())
    silence()


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def core_shares(cores: Sequence[int], workers: int) -> list[list[int]]:
    """The cores of each worker: the cores dealt out in turn, or one core each, reused in turn, when there
    are more workers than cores."""
    if workers >= len(cores):
        return [[core] for core in itertools.islice(itertools.cycle(cores), workers)]
    return [list(cores[i::workers]) for i in range(workers)]


def run_pool(items: Sequence[Any], work: Callable[[Any], Any], workers: int,
             advance: Callable[[int], None]) -> list[Any]:
    """``work`` of the items on a pool of ``workers`` fresh processes, each pinned to its share of the cores
    with one XLA thread, as a Ray task is; the results in the items' order."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: JAX not yet started, so pinning holds
    shares = context.Queue()
    for share in core_shares(usable_cores(), workers):
        shares.put(share)
    results: list[Any] = [None] * len(items)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=pin_worker, initargs=(shares,)) as pool:
        pending = {pool.submit(work, item): index for index, item in enumerate(items)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    results[pending.pop(future)] = future.result()
                    advance(1)
        except BaseException:  # a failed item or an interrupt: start no further items
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results


def run_ray(items: Sequence[Any], work: Callable[[Any], Any], address: str | None, gpus_per_item: float,
            advance: Callable[[int], None]) -> list[Any]:
    """Each item a Ray task (one CPU, ``gpus_per_item`` GPUs, one XLA CPU thread as in the local pool) against
    the cluster at ``address``, or a local Ray instance started here (or already started by the caller); the
    results in the items' order."""
    try:
        import ray
    except ImportError:
        raise DrorlError("--backend ray needs Ray: pip install 'drorl[ray]'") from None
    if not ray.is_initialized():
        if address:  # a cluster keeps its own settings
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    env = pinned_env(dict(os.environ))
    if not address:
        env.update({key: os.environ[key] for key in FORWARDED_ENV if key in os.environ})
    task = ray.remote(num_cpus=1, num_gpus=gpus_per_item, runtime_env={"env_vars": env})(work)
    pending = {task.remote(item): index for index, item in enumerate(items)}
    results: list[Any] = [None] * len(items)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            results[pending.pop(done[0])] = ray.get(done[0])
            advance(1)
    except BaseException:  # a failed item or an interrupt: cancel the rest, as the local pool does
        for ref in pending:
            ray.cancel(ref)
        raise
    return results


def run_items(items: Sequence[Any], work: Callable[[Any], Any], backend: Backend = Backend(),
              done: Callable[[Any], bool] = lambda item: False, description: str = "runs",
              progress: bool = True) -> list[Any]:
    """``work(item)`` for every item, the results in the items' order. Items for which ``done`` holds were
    finished before: the bar starts at their count and their work (which trains nothing) runs in
    this process; the others run on ``backend`` (in order, in this process, when it has no ``workers``)."""
    from drorl.progress import progress_bar

    finished = [done(item) for item in items]
    todo = [index for index, was_done in enumerate(finished) if not was_done]
    results: list[Any] = [None] * len(items)
    with progress_bar(description, len(items), completed=len(items) - len(todo), enabled=progress,
                      unit="runs") as advance:
        if backend.name == "local" and backend.workers is None:
            for index, item in enumerate(items):
                results[index] = work(item)
                if not finished[index]:
                    advance(1)
            return results
        for index in (i for i, was_done in enumerate(finished) if was_done):
            results[index] = work(items[index])
        if not todo:
            return results
        pending = [items[index] for index in todo]
        if backend.name == "ray":
            ran = run_ray(pending, work, backend.address, backend.gpus_per_item, advance)
        else:
            ran = run_pool(pending, work, min(backend.workers, len(pending)), advance)
    for index, result in zip(todo, ran):
        results[index] = result
    return results
