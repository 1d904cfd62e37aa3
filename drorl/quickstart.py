"""``drorl quickstart``: the robust-imitation comparison in miniature, on the small task, in minutes.

1. expert demonstrations on InvertedPendulum-v5 from the scripted LQR expert (nothing to train);
2. BC, DR-BC and BE-DROIL, three seeds each (one compiled program per algorithm);
3. evaluation at nominal dynamics and along gravity, damping, stiffness and action-noise sweeps;
4. a table of return against perturbation value, a markdown report and a PNG of the robustness
   curves, all three algorithms on the same axes.

It is the ``quickstart`` profile of ``drorl benchmark robust-il``.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from drorl.benchmarks import robust_il


def quickstart(out: Path, console: Console | None = None, profile: str = "quickstart") -> Path:
    """Run the comparison into ``out``; returns the report's path (the PNG lies beside it)."""
    console = console or Console()
    report = robust_il.run(profile, Path(out), console=console)
    console.print(f"report: {report}\nplot: {report.parent / 'inverted-pendulum.png'}")
    return report
