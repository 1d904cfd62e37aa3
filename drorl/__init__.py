"""drorl: distributionally robust and pessimistic reinforcement learning from fixed data.

What the ``drorl`` command does is a function here, with the command's defaults:
``drorl.train`` (``drorl train``), ``drorl.evaluate`` (``drorl evaluate``), ``drorl.sweep``
(``drorl sweep``) and ``drorl.report`` (``drorl report``). They are loaded on first use, so
``import drorl`` stays cheap, and they stay the functions after the submodules of the same names
(``drorl/train.py``, the training loop, and so on) are imported: reach those with
``from drorl.train import ...``.
"""

import importlib
import sys
import types

__version__ = "0.1.0"

# name -> (module, function): the experiment layer's functions behind the commands
_COMMANDS = {
    "train": ("drorl.runs", "run_training"),
    "evaluate": ("drorl.runs", "evaluate_run"),
    "sweep": ("drorl.sweep", "sweep"),
    "report": ("drorl.run_report", "write_run_report"),
}


def _command(name: str) -> property:
    """The package attribute ``name``: its command's function, imported when first read. Importing the
    submodule of the same name binds that module here; the setter drops it, so the name keeps meaning
    the function."""

    def function(_package: types.ModuleType):
        module, attribute = _COMMANDS[name]
        return getattr(importlib.import_module(module), attribute)

    def keep_function(_package: types.ModuleType, value: object) -> None:
        if not isinstance(value, types.ModuleType):
            raise AttributeError(f"drorl.{name} is the {name} command's function and cannot be replaced")

    return property(function, keep_function)


class _Package(types.ModuleType):
    train = _command("train")
    evaluate = _command("evaluate")
    sweep = _command("sweep")
    report = _command("report")


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted([*globals(), *_COMMANDS])


__all__ = ["__version__", *_COMMANDS]
