"""tests/_hang_watchdog.py: a test that hangs holding the GIL (where pytest-timeout's handler can never run)
ends its process with every thread's stack, instead of idling until CI's hard limit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

HANGING = '''
import ctypes
import time


def test_a_quick_one():
    time.sleep(0.1)


def test_holds_the_gil():
    ctypes.PyDLL(None).sleep(120)  # libc's sleep, called with the GIL held: no Python runs until it returns
'''


@pytest.mark.slow
def test_a_test_hanging_with_the_gil_held_ends_its_process_with_the_stacks(tmp_path: Path) -> None:
    (tmp_path / "test_hangs.py").write_text(HANGING)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "tests._hang_watchdog", "-p", "no:cacheprovider",
         "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path / "test_hangs.py")],
        cwd=ROOT, env={**os.environ, "SHIRONZI_TEST_HANG_SECONDS": "3"}, capture_output=True, text=True,
        timeout=100,
    )
    assert time.monotonic() - started < 60
    assert done.returncode == 1, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert "test_a_quick_one PASSED" in done.stdout
    assert "Timeout (0:00:03)!" in done.stderr and "test_holds_the_gil" in done.stderr
