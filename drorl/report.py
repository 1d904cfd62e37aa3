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


def grid2d_table(result: dict[str, Any]) -> Table:
    """Mean return (over seeds and episodes) of every cell of a two-family grid (eval.json's ``grid2d``)."""
    grid = result["grid2d"]
    (row_family, column_family), (rows, columns) = grid["families"], grid["values"]
    table = Table(title=f"{result['env']}: mean return, {row_family} (rows) x {column_family} (columns)")
    table.add_column(row_family)
    for value in columns:
        table.add_column(f"{value:g}", justify="right")
    for value, cells in zip(rows, grid["cells"]):
        table.add_row(f"{value:g}", *(f"{cell['return_mean']:.1f}" for cell in cells))
    return table


def print_eval_table(result: dict[str, Any], title: str | None = None, console: Console | None = None) -> None:
    """The table (and the two-family grid's, if any), then the training health warnings of the
    evaluated run, if any."""
    console = console or Console()
    console.print(eval_table(result, title))
    if "grid2d" in result:
        console.print(grid2d_table(result))
    for text in result.get("health_warnings", []):
        console.print(text, markup=False, style="yellow")


def comparison_table(results: list[tuple[str, dict[str, Any]]]) -> Table:
    """Mean return (over seeds and episodes) against perturbation value, one column per algorithm."""
    first = results[0][1]
    table = Table(title=f"{first['env']}: mean return against perturbation value "
                        f"({first['episodes']} episodes x {len(first['nominal']['per_seed'])} seeds)")
    table.add_column("family")
    table.add_column("value", justify="right")
    for label, _ in results:
        table.add_column(label, justify="right")
    table.add_row("nominal", "-", *(f"{r['nominal']['return_mean']:.1f}" for _, r in results))
    for family, points in first.get("sweeps", {}).items():
        table.add_section()
        for i, point in enumerate(points):
            table.add_row(family, f"{point['value']:g}",
                          *(f"{r['sweeps'][family][i]['return_mean']:.1f}" for _, r in results))
    return table
