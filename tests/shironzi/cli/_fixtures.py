"""Helpers of the CLI tests: what one `shironzi` invocation returned."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def __iter__(self) -> Iterator[Any]:
        """Unpacks as (code, stdout, stderr)."""
        return iter((self.code, self.stdout, self.stderr))


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """Run `shironzi ARGS` in-process the way the console script does (one error line, an exit code)."""
    from shironzi.cli import main

    capsys.readouterr()
    try:
        main.run(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return CliResult(code, out.out, out.err)
