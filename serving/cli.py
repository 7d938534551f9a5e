"""`shironzi serve api`: run the platform API under uvicorn with the app factory."""

from __future__ import annotations

import typer

from shironzi.cli.net import ensure_can_listen


def serve_api(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to bind."),
    workers: int = typer.Option(
        1, min=1, max=64, help="Uvicorn worker processes (on Linux each gets its own SO_REUSEPORT socket)."
    ),
    log_level: str = typer.Option("warning", help="Uvicorn log level."),
) -> None:
    """Serve the platform API (`/v1/...`, `/healthz`, `/readyz`, `/metrics`) with uvicorn."""
    from serving.server import run_api

    ensure_can_listen(host, port)
    typer.echo(f"Shironzi API on http://{host}:{port} (docs: http://{host}:{port}/docs, workers: {workers})")
    run_api(host=host, port=port, workers=workers, log_level=log_level)
