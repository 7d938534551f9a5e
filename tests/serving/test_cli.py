"""`shironzi serve api`: a port that is taken is one readable error line and a non-zero exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def test_serve_api_on_a_busy_port_fails_with_one_line(home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cli = Path(sys.executable).with_name("shironzi")
        result = subprocess.run([str(cli), "serve", "api", "--port", str(port)], capture_output=True, text=True,
                                timeout=120, env={**os.environ, "SHIRONZI_HOME": str(home)})
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(port) in lines[0], result.stderr
    assert "Traceback" not in result.stderr
