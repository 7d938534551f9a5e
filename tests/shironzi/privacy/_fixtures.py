"""Helpers of the privacy tests: land PII for tenants, run the `shironzi` CLI, kill a rotation at a point."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import pyarrow as pa

from shironzi.privacy.pseudonymise import pseudonymise_batch

PII = ["email", "full_name"]


def land_pii(rows: Sequence[tuple[str, str, str, str]]) -> list[str]:
    """Pseudonymise `(tenant_id, customer_id, email, full_name)` rows (the PII table gets the raw values);
    returns each row's email token."""
    batch = pa.table({
        "tenant_id": [r[0] for r in rows],
        "customer_id": [r[1] for r in rows],
        "properties": [json.dumps({"email": r[2], "full_name": r[3]}) for r in rows],
    })
    out = pseudonymise_batch(batch, pii_fields=PII, recoverable_fields=PII)
    return [json.loads(p)["email"] for p in out.column("properties").to_pylist()]


def rotation_cli(*, kill_at: str | None = None, after: int = 0) -> list[str]:
    """argv of the `shironzi` CLI in a child process, SIGKILLed by itself at rotation point `kill_at` once the
    count there reaches `after` (the hook is set in the child: the CLI has no crash switch)."""
    code = "import os, signal\nimport shironzi.privacy.key_rotation as rotation\n"
    if kill_at is not None:
        code += (
            "def hook(point, count):\n"
            f"    if point == {kill_at!r} and count >= {int(after)}:\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "rotation.rotation_hook = hook\n"
        )
    code += "from shironzi.cli.main import run\nrun()\n"
    return [sys.executable, "-c", code]
