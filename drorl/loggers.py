"""Where training metrics go besides metrics.jsonl, which is always written: TensorBoard event files and
Weights & Biases runs, chosen with ``drorl train --logger jsonl,tensorboard,wandb`` (extras
``drorl[tensorboard]`` and ``drorl[wandb]``).

Each sink receives the same records as metrics.jsonl, one per seed and compiled call:
``{"step": N, "seed": S, <metric>: value, ...}``.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from drorl.errors import DrorlError

LOGGERS = ("jsonl", "tensorboard", "wandb")
Records = list[dict[str, Any]]


class Sink(Protocol):
    def write(self, records: Records) -> None: ...

    def close(self) -> None: ...


def parse_loggers(text: str) -> tuple[str, ...]:
    """``"jsonl,tensorboard"`` as names, each checked (jsonl is always on, naming it is optional)."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    for name in names:
        if name not in LOGGERS:
            raise DrorlError(f"--logger {name}: expected some of {', '.join(LOGGERS)} (comma-separated)")
    return names


def metric_values(record: dict[str, Any]) -> dict[str, float]:
    return {key: value for key, value in record.items() if key not in ("step", "seed")}


class TensorBoardSink:
    """One event directory per seed (``tensorboard/seed_S``: TensorBoard overlays the seeds as runs), a scalar
    per metric. A resumed run drops the events its first run logged after the checkpoint it resumes from."""

    def __init__(self, run_dir: Path, seeds: Sequence[int], start_step: int):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise DrorlError("--logger tensorboard needs tensorboardX: pip install 'drorl[tensorboard]'") from None
        self.writers = {seed: SummaryWriter(str(run_dir / "tensorboard" / f"seed_{seed}"),
                                            purge_step=start_step + 1 if start_step else None) for seed in seeds}

    def write(self, records: Records) -> None:
        for record in records:
            writer = self.writers[record["seed"]]
            for key, value in metric_values(record).items():
                writer.add_scalar(key, value, record["step"])
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


class WandbSink:
    """One W&B run per training call, kept in ``run_dir/wandb``, metrics as ``seed_S/metric`` and the run's
    config.json as its config. Offline unless WANDB_MODE says otherwise: no account or network is needed, and
    ``wandb sync`` uploads the run later."""

    def __init__(self, run_dir: Path, record: dict[str, Any]):
        try:
            import wandb
        except ImportError:
            raise DrorlError("--logger wandb needs wandb: pip install 'drorl[wandb]'") from None
        (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(dir=str(run_dir), mode=os.environ.get("WANDB_MODE", "offline"),
                              project=os.environ.get("WANDB_PROJECT", "drorl"), name=run_dir.name, config=record)

    def write(self, records: Records) -> None:
        by_step: dict[int, dict[str, float]] = defaultdict(dict)
        for record in records:
            by_step[record["step"]].update({f"seed_{record['seed']}/{k}": v for k, v in metric_values(record).items()})
        for step in sorted(by_step):
            self.run.log(by_step[step], step=step)

    def close(self) -> None:
        self.run.finish()


def open_sink(name: str, run_dir: Path, seeds: Sequence[int], record: dict[str, Any], start_step: int) -> Sink:
    if name == "tensorboard":
        return TensorBoardSink(run_dir, seeds, start_step)
    return WandbSink(run_dir, record)


@contextlib.contextmanager
def metric_loggers(names: Sequence[str], run_dir: Path, seeds: Sequence[int], record: dict[str, Any],
                   start_step: int) -> Iterator[Callable[[Records], None]]:
    """Yield ``log(records)`` writing to every named sink besides metrics.jsonl (the caller's); the sinks are
    closed when the block ends, however it ends."""
    sinks = [open_sink(name, Path(run_dir), seeds, record, start_step) for name in names if name != "jsonl"]

    def log(records: Records) -> None:
        for sink in sinks:
            sink.write(records)

    try:
        yield log
    finally:
        for sink in sinks:
            sink.close()
