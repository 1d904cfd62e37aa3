"""Running the ``drorl`` command in-process, for the tests of the command line."""

import sys

from drorl import cli


def run_cli(monkeypatch, capsys, *args):
    """Run ``drorl ARGS`` in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["drorl", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err
