"""Sweeps (``drorl sweep CONFIG``): a grid of training runs over algorithms, datasets, config fields and seeds,
run by a local process pool or by Ray, then reported with the aggregate statistics of ``drorl.run_report``.

A cell is one run directory: one algorithm with one setting of the swept fields on one dataset, for one seed
(or for every seed at once under ``vmap`` with ``vmap_seeds: true``). Cells are plain JSON-able dicts, run by
``run_cell`` (``drorl.benchmarks.common.train_and_evaluate``) on the engine the benchmark suites use too
(``drorl.execution``): a worker of the local pool or a Ray task, each with its own core and one XLA compute
thread. A cell whose eval.json exists is done and skipped; an interrupted cell resumes from its latest
checkpoint; so a killed sweep, started again, runs only what is missing.

The config (YAML)::

    algorithms: [bc, {name: drbc, label: DR-BC, set: {rho: 0.2}}]  # names, or name + label + fixed fields
    datasets: [hopper-medium, /data/my.hdf5]    # names (generated on first use) or HDF5 paths
    env: null                                   # the task to evaluate on (default: each dataset's metadata)
    set: {policy.lr: [0.001, 0.0003]}           # swept fields, every combination (a tuple's values: [[64, 64]])
    seeds: [0, 1, 2]
    steps: 100000
    episodes: 10                                # evaluation episodes per seed and grid point
    families: [gravity, damping]                # perturbation sweeps of the evaluation (default: none)
    vmap_seeds: false                           # true: one cell trains every seed at once
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path
from typing import Any, Sequence

from drorl.errors import DrorlError
from drorl.execution import Backend, run_items, usable_cores
from drorl.io_utils import write_json_atomic

KEYS = ("algorithms", "datasets", "env", "set", "seeds", "steps", "episodes", "families", "vmap_seeds")
ALGORITHM_KEYS = ("name", "label", "set")


@dataclasses.dataclass(frozen=True)
class Variant:
    """An algorithm as the sweep names it: its label in reports and the config fields fixed for it."""

    algorithm: str
    label: str
    overrides: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    variants: tuple[Variant, ...]
    datasets: tuple[str, ...]
    env: str | None
    grid: dict[str, list[Any]]
    seeds: tuple[int, ...]
    steps: int
    episodes: int
    families: tuple[str, ...] = ()
    vmap_seeds: bool = False


def _variant(entry: Any, source: str) -> Variant:
    if isinstance(entry, str):
        return Variant(entry, entry, {})
    if not isinstance(entry, dict) or "name" not in entry:
        raise DrorlError(f"{source}: algorithms: expected a name or a mapping with 'name'; got {entry!r}")
    unknown = sorted(set(entry) - set(ALGORITHM_KEYS))
    if unknown:
        raise DrorlError(f"{source}: algorithms: unknown key {unknown[0]!r}; expected {', '.join(ALGORITHM_KEYS)}")
    fixed = entry.get("set") or {}
    if not isinstance(fixed, dict):
        raise DrorlError(f"{source}: algorithms: 'set' of {entry['name']} must be a mapping of field: value")
    return Variant(str(entry["name"]), str(entry.get("label") or entry["name"]), dict(fixed))


def _positive_int(raw: dict[str, Any], key: str, source: str) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise DrorlError(f"{source}: {key}: expected a positive integer; got {value!r}")
    return value


def _names(raw: dict[str, Any], key: str, source: str, required: bool = True) -> tuple[str, ...]:
    value = raw.get(key, [] if not required else None)
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or (required and not value):
        raise DrorlError(f"{source}: {key}: expected a list{' with at least one entry' if required else ''}")
    return tuple(str(v) for v in value)


def parse_sweep_config(raw: Any, source: str = "sweep config") -> SweepConfig:
    """A sweep config from the parsed YAML; every error names ``source`` and the key."""
    if not isinstance(raw, dict):
        raise DrorlError(f"{source}: expected a mapping of {', '.join(KEYS)}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise DrorlError(f"{source}: unknown key {unknown[0]!r}; expected some of {', '.join(KEYS)}")
    algorithms = raw.get("algorithms")
    if not isinstance(algorithms, list) or not algorithms:
        raise DrorlError(f"{source}: algorithms: expected a list with at least one entry")
    variants = tuple(_variant(entry, source) for entry in algorithms)
    grid = raw.get("set") or {}
    if not isinstance(grid, dict):
        raise DrorlError(f"{source}: set: expected a mapping of field: [values]")
    grid = {str(k): v if isinstance(v, list) else [v] for k, v in grid.items()}
    for field, values in grid.items():
        if not values:
            raise DrorlError(f"{source}: set: {field}: expected at least one value")
        if len({repr(v) for v in values}) != len(values):  # two cells would share one run directory
            raise DrorlError(f"{source}: set: {field}: a value is repeated (a tuple field's values are lists: "
                             f"[[64, 64], [256, 256]])")
    if not isinstance(raw.get("env"), (str, type(None))):
        raise DrorlError(f"{source}: env: expected a task's name")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise DrorlError(f"{source}: seeds: expected a list of distinct integers")
    return SweepConfig(variants=variants, datasets=_names(raw, "datasets", source), env=raw.get("env"), grid=grid,
                       seeds=tuple(seeds), steps=_positive_int(raw, "steps", source),
                       episodes=_positive_int({"episodes": raw.get("episodes", 10)}, "episodes", source),
                       families=_names(raw, "families", source, required=False),
                       vmap_seeds=bool(raw.get("vmap_seeds", False)))


def load_sweep_config(path: str | Path) -> SweepConfig:
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DrorlError(f"{path}: no such sweep config") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DrorlError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_sweep_config(raw, str(path))


def slug(text: str) -> str:
    """A directory name for a label: spaces become underscores, anything unusual a hyphen."""
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", text.replace(" ", "_"))


def expand_cells(config: SweepConfig, datasets: dict[str, tuple[str, str]], out: Path) -> list[dict[str, Any]]:
    """Every cell of the grid, in order (dataset, algorithm, swept values, seed). ``datasets`` maps each config
    entry to its (registry name or path, file) as resolved once before the cells run."""
    fields = list(config.grid)
    seed_groups = [config.seeds] if config.vmap_seeds else [(s,) for s in config.seeds]
    cells = []
    for entry, variant, values, seeds in itertools.product(config.datasets, config.variants,
                                                          itertools.product(*config.grid.values()), seed_groups):
        swept = dict(zip(fields, values))
        label = " ".join([variant.label, *(f"{k}={v}" for k, v in swept.items())])
        dataset_id, dataset_file = datasets[entry]
        cells.append({"algorithm": variant.algorithm, "label": label, "overrides": {**variant.overrides, **swept},
                      "dataset": dataset_id, "dataset_file": dataset_file, "env": config.env,
                      "seeds": list(seeds), "steps": config.steps, "episodes": config.episodes,
                      "families": list(config.families),
                      "run_dir": str(out / slug(Path(dataset_id).stem) / slug(label)
                                     / ("seeds" + "-".join(map(str, seeds)) if len(seeds) > 1 else f"seed{seeds[0]}"))})
    return cells


def as_text(value: Any) -> str:
    """A YAML value as ``--set`` text (lists as comma-separated items), to be read back as the field's type."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def typed_overrides(algorithm: str, overrides: dict[str, Any], source: str) -> dict[str, Any]:
    """``overrides`` checked against the offline algorithm's config and read as each field's type, as ``--set``
    reads them (YAML reads 3e-4 as a string), before any cell runs."""
    from drorl import algos
    from drorl.algos.base import config_value, config_with_overrides

    try:
        config = config_with_overrides(algos.get(algorithm, "offline").Config,
                                       {key: as_text(value) for key, value in overrides.items()})
    except DrorlError as exc:
        raise DrorlError(f"{source}: {algorithm}: {exc}") from None
    return {key: config_value(config, key) for key in overrides}


def is_done(cell: dict[str, Any]) -> bool:
    return (Path(cell["run_dir"]) / "eval.json").is_file()


def run_cell(cell: dict[str, Any]) -> str:
    """Train and evaluate one cell (resuming it if it was interrupted; nothing when it is done); returns its run
    directory."""
    from drorl.benchmarks.common import train_and_evaluate
    from drorl.data.registry import resolve
    from drorl.scores import task_of

    if is_done(cell):
        return cell["run_dir"]
    # a cluster node without the file generates the named dataset itself
    source = cell["dataset_file"] if Path(cell["dataset_file"]).is_file() else cell["dataset"]
    dataset, _, _ = resolve(source, progress=False)
    task = task_of(dataset, cell["env"], cell["dataset"])
    if task is None:
        raise DrorlError(f"{cell['dataset']}: its metadata names no task; set env in the sweep config")
    train_and_evaluate(cell["algorithm"], cell["overrides"], dataset, cell["dataset"], task, Path(cell["run_dir"]),
                       cell["steps"], cell["seeds"], cell["episodes"], cell["families"], cell["label"],
                       progress=False)
    return cell["run_dir"]


def resolve_datasets(entries: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Each dataset entry's (name or path, absolute file), generating missing named datasets once, here, before
    any worker reads them."""
    from drorl.data.registry import resolve

    resolved = {}
    for entry in entries:
        _, name, path = resolve(entry)
        resolved[entry] = (name, str(Path(path).resolve()))
    return resolved


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What a sweep did: the run directories it trained and those already done, and its report."""

    ran: list[str]
    skipped: list[str]
    report: Path


def sweep(config_path: str | Path, out: str | Path | None = None, backend: str = "local", workers: int | None = None,
          address: str | None = None, gpus_per_cell: float = 0.0, progress: bool = True) -> SweepResult:
    """Run every missing cell of the sweep in ``config_path`` into ``out`` (default runs/sweeps/CONFIG_NAME),
    then write the aggregate report of all its cells (``out/report.md``) and the cells (``out/sweep.json``)."""
    from drorl.run_report import write_run_report

    if backend == "local" and workers is None:  # a sweep's default: one pinned worker per usable core
        workers = len(usable_cores())
    engine = Backend(backend, workers, address, gpus_per_cell)
    config = load_sweep_config(config_path)
    out = Path(out or Path("runs") / "sweeps" / Path(config_path).stem).resolve()
    cells = [{**cell, "overrides": typed_overrides(cell["algorithm"], cell["overrides"], str(config_path))}
             for cell in expand_cells(config, resolve_datasets(config.datasets), out)]
    write_json_atomic(out / "sweep.json", cells)
    todo = [cell for cell in cells if not is_done(cell)]
    run_items(cells, run_cell, engine, done=is_done, description=f"sweep {Path(config_path).name}",
              progress=progress)
    report = write_run_report([cell["run_dir"] for cell in cells], out)
    return SweepResult(ran=[c["run_dir"] for c in todo], skipped=[c["run_dir"] for c in cells if c not in todo],
                       report=report)

