"""`shironzi monitor serve` (the long-running metrics process) and `shironzi monitor status` (the terminal view
of the Platform health page). Both are `monitor.<command>` plugins of the `shironzi.cli` entry point group."""

from __future__ import annotations

import datetime as dt
import signal
import threading
from typing import Any

import typer

from shironzi.cli.net import ensure_can_listen


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(9464, min=1, max=65535, help="Port to bind."),
) -> None:
    """Serve `/metrics` (pushed stage metrics and lake figures) and `/healthz` until SIGINT/SIGTERM; batch
    stages push here when SHIRONZI_MONITOR_URL points at it."""
    from monitoring.server import make_server
    from shironzi.observability import stage

    ensure_can_listen(host, port)
    server, monitor = make_server(host, port)
    stopping = threading.Event()

    def stop(*_: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    typer.echo(f"Shironzi monitor on http://{host}:{port} (/metrics, /healthz; pushes to /metrics/job/<job>)")
    try:
        with stage("monitor_serve", host=host, port=port) as summary:
            monitor.lake.refresh_if_stale()
            server.serve_forever(poll_interval=0.5)
            summary.extra["pushed_groups"] = len(monitor.pushed.groups)
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _age(epoch: float | None, now: dt.datetime) -> str:
    if not epoch:
        return "never"
    seconds = max(0, int(now.timestamp() - epoch))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def status() -> None:
    """Stage metrics, lake tables, open alerts and the tenants with anomalies today (the Platform health page
    in the terminal). Exits 1 when a stage failed or an alert is open."""
    from rich.console import Console
    from rich.table import Table

    from monitoring.status import platform_health

    health = platform_health()
    console = Console(highlight=False)
    now = health.generated_at
    console.print(f"[bold]Platform health[/bold] at {now:%Y-%m-%d %H:%M:%S} UTC")
    if health.monitor_error:
        console.print(f"stage metrics: unavailable: {health.monitor_error}", markup=False)
    else:
        stages = Table("stage", "succeeded", "failed", "last success", title="Stages")
        for row in health.stages:
            stages.add_row(row.stage, str(row.succeeded), f"[red]{row.failed}[/red]" if row.failed else "0",
                           _age(row.last_success, now))
        console.print(stages if health.stages else "stages: none has reported yet")
    if health.lake.is_empty():
        console.print("lake: no Delta tables yet")
    else:
        lake = Table("region", "layer", "table", "placement", "version", "files", "small files", title="Lake")
        for r in health.lake.iter_rows(named=True):
            lake.add_row(r["region"], r["layer"], r["table"], r["placement"], f"{int(r['version'])}",
                         f"{int(r['files']):,}", f"{r['small_file_ratio']:.0%}")
        console.print(lake)
    if health.alerts.is_empty():
        console.print("alerts: no open alerts")
    else:
        alerts = Table(*health.alerts.columns, title=f"Open alerts ({health.alerts.height})")
        for values in health.alerts.iter_rows():
            alerts.add_row(*(str(v) for v in values))
        console.print(alerts)
    if health.anomalies.is_empty():
        console.print("anomalies: no tenant has an anomaly today")
    else:
        anomalies = Table("tenant", "kinds", "score", "data health", title="Tenants with anomalies today")
        for r in health.anomalies.iter_rows(named=True):
            anomalies.add_row(r["tenant_id"], r["kinds"], f"{r['score']:.2f}",
                              f"shironzi serve dashboard → Data health ({r['tenant_id']})")
        console.print(anomalies)
    if health.failed_stages or not health.alerts.is_empty():
        raise SystemExit(1)  # for scripts and probes: something needs a look (typer.Exit's code is not kept)
