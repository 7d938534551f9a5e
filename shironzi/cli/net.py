"""Network helpers of the server commands (`shironzi serve ...`)."""

from __future__ import annotations

import socket

from shironzi.errors import InvalidInputError


def ensure_can_listen(host: str, port: int) -> None:
    """Fail with one clear error when `host:port` cannot be bound (taken, or not an address of this host)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InvalidInputError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
