"""The package's imports point down the layers of docs/architecture.md, and no two modules import
each other (every import counts, including those inside functions)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "drorl"


def layer_table() -> list[tuple[int, str]]:
    """(layer, pattern) rows of the table under '## Layers' in docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = re.match(r"^\|\s*(\d+)\s[^|]*\|([^|]*)\|", line)
        if match:
            rows += [(int(match.group(1)), p) for p in re.findall(r"`([\w.*]+)`", match.group(2))]
    return rows


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer_of(module: str, table: list[tuple[int, str]]) -> int | None:
    """The layer of the most specific pattern covering ``module``."""
    best, best_len = None, -1
    for layer, pattern in table:
        base = pattern[:-2] if pattern.endswith(".*") else pattern
        covers = module == base or (pattern.endswith(".*") and module.startswith(base + "."))
        if covers and len(base) > best_len:
            best, best_len = layer, len(base)
    return best


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The drorl modules ``path`` imports (``from a import b`` counts b when b is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "drorl"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "drorl":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
    return out


def test_every_module_has_a_layer():
    table = layer_table()
    assert len(table) > 20
    missing = sorted(m for m in modules() if layer_of(m, table) is None)
    assert not missing, f"modules in no layer of docs/architecture.md: {missing}"


def upward_imports(graph: dict[str, set[str]], table: list[tuple[int, str]]) -> list[str]:
    return [f"{m} (layer {layer_of(m, table)}) imports {t} (layer {layer_of(t, table)})"
            for m, targets in sorted(graph.items()) for t in sorted(targets)
            if t != m and layer_of(t, table) > layer_of(m, table)]


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(p, known) - {m} for m, p in known.items()}


def test_imports_point_down_the_layers():
    upward = upward_imports(import_graph(), layer_table())
    assert not upward, "\n".join(upward)


def test_no_two_modules_import_each_other():
    graph = import_graph()
    cycles = sorted({tuple(sorted((a, b))) for a, deps in graph.items() for b in deps if a in graph.get(b, ())})
    assert not cycles, f"modules importing each other: {cycles}"


def test_the_layer_check_catches_an_upward_import():
    """The check itself: an algorithm that imports the training loop, as dualdice once did, is reported."""
    graph = import_graph()
    graph["drorl.algos.dualdice"] = graph["drorl.algos.dualdice"] | {"drorl.train"}
    assert upward_imports(graph, layer_table()) == [
        "drorl.algos.dualdice (layer 4) imports drorl.train (layer 7)"]
