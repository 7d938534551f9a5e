"""`shironzi serve dashboard`: run the Streamlit dashboards on the configured SHIRONZI_HOME."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from shironzi.cli.net import ensure_can_listen

APP = Path(__file__).resolve().parent / "app.py"
PRIMARY_COLOR = "#2563eb"


def streamlit_command(*, host: str, port: int, headless: bool) -> list[str]:
    """The `streamlit run` command line for the dashboards (through `apps.warm_start`, which preloads the
    data stack before Streamlit starts listening)."""
    return [
        sys.executable, "-m", "apps.warm_start", "run", str(APP),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true" if headless else "false",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
        "--theme.base", "light",
        "--theme.primaryColor", PRIMARY_COLOR,
    ]


def dashboard_environment() -> dict[str, str]:
    """The current environment with the resolved settings pinned, so the app reads the same home and lake
    whatever directory Streamlit runs from."""
    from shironzi.settings import get_settings

    settings = get_settings()
    env = dict(os.environ)
    env["SHIRONZI_HOME"] = str(settings.home)
    if settings.lake_uri:
        env["SHIRONZI_LAKE_URI"] = settings.lake_uri
    if settings.database_url:
        env["SHIRONZI_DATABASE_URL"] = settings.database_url
    return env


def serve_dashboard(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8501, min=1, max=65535, help="Port to bind."),
    headless: bool = typer.Option(True, "--headless/--open-browser", help="Do not open a browser window."),
) -> None:
    """Serve the dashboards (analysts, operators, compliance) with Streamlit; sign in with an API key."""
    ensure_can_listen(host, port)
    env = dashboard_environment()
    typer.echo(f"Shironzi dashboards on http://{host}:{port} (home {env['SHIRONZI_HOME']}); "
               "sign in with a tenant API key, or a platform admin key to operate.")
    sys.stdout.flush()
    command = streamlit_command(host=host, port=port, headless=headless)
    os.execve(command[0], command, env)
