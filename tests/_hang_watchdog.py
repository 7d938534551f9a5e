"""A watchdog for hangs that no Python code can interrupt: a test still running after HANG_SECONDS dumps every
thread's stack to stderr and ends its process.

pytest-timeout raises inside the test from a signal handler, which needs the GIL. A native library that
deadlocks holding it (the dbt plugin's Arrow scans once did) leaves nothing to run that handler: the xdist
worker sat idle until CI's hard limit. faulthandler's watchdog is a C thread that needs no GIL; under xdist the
worker's end is reported as a crash of that test, and a new worker runs the rest."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
from collections.abc import Iterator

import pytest

HANG_SECONDS = float(os.environ.get("SHIRONZI_TEST_HANG_SECONDS", "1200"))  # twice pytest-timeout's 600 s
_STDERR: list[int] = []  # a copy of the real stderr: pytest's capture points fd 2 at a file lost when we exit


def pytest_configure(config: pytest.Config) -> None:
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        _STDERR.append(os.dup(sys.__stderr__.fileno()))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=_STDERR[0])
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
