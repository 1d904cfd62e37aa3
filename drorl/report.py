"""Tables of evaluation results, for the terminal (Rich) and for markdown reports."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def eval_table(result: dict[str, Any], title: str | None = None) -> Table:
    """Return (mean ± std over seeds and episodes) and normalised score per perturbation value."""
    table = Table(title=title or f"{result['env']}: return against perturbation "
                                 f"({result['episodes']} episodes x {len(result['nominal']['per_seed'])} seeds)")
    for col in ("family", "value", "return", "normalised"):
        table.add_column(col, justify="left" if col == "family" else "right")
    nominal = result["nominal"]
    table.add_row("nominal", "-", f"{nominal['return_mean']:.1f} ± {nominal['return_std']:.1f}",
                  f"{nominal['normalized_mean']:.1f}")
    for family, points in result.get("sweeps", {}).items():
        table.add_section()
        for point in points:
            table.add_row(family, f"{point['value']:g}",
                          f"{point['return_mean']:.1f} ± {point['return_std']:.1f}",
                          f"{point['normalized_mean']:.1f}")
        summary = result.get("summary", {}).get(family)
        if summary:
            table.add_row(f"{family}: area / worst", "", "",
                          f"{summary['auc']:.1f} / {summary['worst']:.1f}")
    return table


def print_eval_table(result: dict[str, Any], title: str | None = None, console: Console | None = None) -> None:
    (console or Console()).print(eval_table(result, title))


def eval_markdown(result: dict[str, Any]) -> str:
    """The same table as markdown, for reports committed to the repository."""
    lines = ["| family | value | return (mean ± std) | normalised |", "|---|---:|---:|---:|"]
    nominal = result["nominal"]
    lines.append(f"| nominal | - | {nominal['return_mean']:.1f} ± {nominal['return_std']:.1f} | "
                 f"{nominal['normalized_mean']:.1f} |")
    for family, points in result.get("sweeps", {}).items():
        for point in points:
            lines.append(f"| {family} | {point['value']:g} | {point['return_mean']:.1f} ± "
                         f"{point['return_std']:.1f} | {point['normalized_mean']:.1f} |")
    return "\n".join(lines) + "\n"
