"""Helpers of the CLI tests: what one `shironzi` invocation returned."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
