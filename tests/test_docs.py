"""The documentation site (docs/, mkdocs.yml): the tutorial's commands run, every registered algorithm has a
page that documents every field of its config, and the strict build passes."""

import dataclasses
import importlib
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from drorl import cli
from drorl.algos import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
ALGORITHM_PAGES = DOCS / "algorithms"
PAGE_SECTIONS = ("## Objective", "## Configuration", "## What to tune", "## Failure signatures", "## Results")


def bash_commands(markdown: str) -> list[str]:
    """The commands of the ```bash blocks of a markdown text, in order: continuation lines joined, blank
    lines and comments dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


def run_drorl(words: list[str], monkeypatch) -> int:
    """``drorl ARGS`` through the console script's entry point, in this process; returns the exit code."""
    monkeypatch.setattr(sys, "argv", words)
    try:
        cli.main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def test_bash_commands_join_continuations_and_drop_comments():
    text = "x\n```bash\n# a comment\ndrorl train bc \\\n  --steps 5   # why\n\n```\n```python\nignored\n```\n"
    assert bash_commands(text) == [["drorl", "train", "bc", "--steps", "5"]]


@pytest.mark.slow
def test_tutorial_commands_run_and_write_what_the_tutorial_reads(tmp_path, monkeypatch, capsys):
    """Executes every command of docs/tutorial.md's bash blocks exactly as written, in a fresh directory with
    $DRORL_DATA in a temporary directory. The commands run in this process through ``drorl.cli:main``, the
    function the ``drorl`` executable calls (checked against pyproject.toml), so that JAX is imported once
    and its small compilations are shared across commands: about 60 s of CPU at the tutorial's toy sizes,
    against about 100 s as eight processes."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["drorl"] == "drorl.cli:main"
    commands = bash_commands((DOCS / "tutorial.md").read_text())
    steps = [words[1] for words in commands if words[0] == "drorl"]
    assert [words[0] for words in commands] == ["drorl"] * len(commands), "tutorial commands must be drorl commands"
    for step in ("datasets", "train", "evaluate", "plot", "report"):
        assert step in steps, f"the tutorial has no `drorl {step}` step"
    assert {option(w, "--sweep") for w in commands if w[1] == "evaluate"} == {"gravity"}
    assert {w[2] for w in commands if w[1] == "train"} == {"bc", "be-droil"}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DRORL_DATA", str(tmp_path / "data"))
    for words in commands:
        code = run_drorl(words, monkeypatch)
        output = capsys.readouterr()
        assert code == 0, f"`{shlex.join(words)}` exited {code}: {output.err[-2000:]}"

    for words in commands:
        if words[1] == "train":
            assert (tmp_path / option(words, "--out") / "config.json").is_file()
        elif words[1] == "evaluate":
            result = json.loads((tmp_path / words[2] / "eval.json").read_text())
            assert len(result["sweeps"]["gravity"]) > 1 and set(result["summary"]["gravity"]) == {"auc", "worst"}
        elif words[1] == "plot":
            assert (tmp_path / option(words, "--out")).stat().st_size > 0
        elif words[1] == "report":
            assert "IQM" in (tmp_path / option(words, "--out") / "report.md").read_text()
    assert any(path.suffix == ".hdf5" for path in (tmp_path / "data").iterdir())


def documented_attributes(cls: type) -> set[str]:
    """The names in the ``Attributes:`` section of a class docstring (``a, b: ...`` documents both)."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()[1:]  # the first line is the summary, never a section
    if "Attributes:" not in [line.strip() for line in lines]:
        return set()
    start = [line.strip() for line in lines].index("Attributes:") + 1
    entries = [line for line in lines[start:] if line.strip()]
    if not entries:
        return set()
    indent = len(entries[0]) - len(entries[0].lstrip())
    names: set[str] = set()
    for line in entries:
        depth = len(line) - len(line.lstrip())
        if depth < indent:
            break
        match = re.match(r"([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*:", line.strip())
        if depth == indent and match:
            names.update(name.strip() for name in match.group(1).split(","))
    return names


def config_classes(config: type) -> list[type]:
    """``config`` and every config dataclass nested in it (through the fields' defaults), each once."""
    found = [config]
    for cls in found:
        for field in dataclasses.fields(cls):
            default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            if dataclasses.is_dataclass(default) and type(default) not in found:
                found.append(type(default))
    return found


def rendered(cls: type) -> str:
    return f"::: {cls.__module__}.{cls.__qualname__}"


def test_documented_attributes_reads_google_sections():
    class Example:
        """Summary.

        Attributes:
            alpha: the first.
            beta, gamma: two at once,
                continued: not a name.
        """

    class NoSummary:
        """Attributes:
            alpha: read as the summary by mkdocstrings, so not documented.
        """

    assert documented_attributes(Example) == {"alpha", "beta", "gamma"}
    assert documented_attributes(NoSummary) == set()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_algorithm_has_a_page_documenting_every_config_field(name):
    """A page per registered algorithm, with the standard sections, that renders its Config (mkdocstrings
    shows each documented attribute with its default) and names its declared diagnostics; every field of
    the Config and of each config nested in it is in that class's Attributes section, and each nested config
    is rendered on some algorithm page. A new algorithm, field or diagnostic without docs fails here."""
    module = importlib.import_module(REGISTRY[name].module)
    page = ALGORITHM_PAGES / f"{name}.md"
    assert page.is_file(), f"{name} has no page docs/algorithms/{name}.md"
    text = page.read_text()
    for section in PAGE_SECTIONS:
        assert f"\n{section}\n" in text, f"{page.name} has no '{section}' section"
    assert rendered(module.Config) in text, f"{page.name} does not render {module.__name__}.Config"
    every_page = "\n".join(p.read_text() for p in ALGORITHM_PAGES.glob("*.md"))
    for cls in config_classes(module.Config):
        missing = {f.name for f in dataclasses.fields(cls)} - documented_attributes(cls)
        assert not missing, f"{cls.__module__}.{cls.__qualname__}: fields not in its Attributes: {sorted(missing)}"
        assert rendered(cls) in every_page, f"no algorithm page renders {cls.__module__}.{cls.__qualname__}"
    for metric in getattr(module, "DIAGNOSTICS", {}):
        assert f"`{metric}`" in text, f"{page.name} does not name the declared diagnostic {metric!r}"


def rendered_attributes(html: str, cls: type) -> str:
    """The text of the Attributes table of ``cls`` as mkdocstrings rendered it on a built page."""
    start = html.index("Attributes:", html.index(f'id="{cls.__module__}.{cls.__qualname__}"'))
    return re.sub(r"<[^>]+>", " ", html[start:html.index("</table>", start)])


def test_docs_build_strict_and_every_config_field_is_on_a_built_page(tmp_path):
    """``mkdocs build --strict`` (any warning fails: a broken link or anchor, an object mkdocstrings cannot
    render, a page outside the nav); then every field of every algorithm's config, nested configs included,
    is in the Attributes table of the built page that renders it."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install '.[dev]' installs it)")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is not installed")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pages = {page.stem: page.read_text() for page in ALGORITHM_PAGES.glob("*.md")}
    for entry in REGISTRY.values():
        for cls in config_classes(importlib.import_module(entry.module).Config):
            page = next(stem for stem, text in pages.items() if rendered(cls) in text)
            table = rendered_attributes((site / "algorithms" / page / "index.html").read_text(), cls)
            for field in dataclasses.fields(cls):
                assert re.search(rf"\b{field.name}\b", table), f"algorithms/{page}: {cls.__qualname__}.{field.name}"
