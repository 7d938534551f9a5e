"""`shironzi broker start|stop|status` and `shironzi broker topics create|list`: the bundled broker."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ingestion.stream import broker
from shironzi.settings import get_settings

console = Console(highlight=False)

broker_app = typer.Typer(
    help="The bundled Kafka-protocol broker (tansu, in memory) for local runs.", no_args_is_help=True
)
topics_app = typer.Typer(help="Topics on the configured broker.", no_args_is_help=True)
broker_app.add_typer(topics_app, name="topics")

BootstrapOption = Annotated[
    str | None,
    typer.Option("--bootstrap", help="Kafka bootstrap servers (default: settings, then the bundled broker)."),
]


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@broker_app.command("start")
def start(
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default 9092 if free, else any free port).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the broker answers Kafka requests.")] = True,
) -> None:
    """Start the bundled broker in the background (a running one is left as is)."""
    settings = get_settings()
    settings.ensure_home()
    already = broker.broker_status(home=settings.home)
    info = broker.start_broker(home=settings.home, port=port, wait=wait)
    verb = "already running" if already.running else "started"
    console.print(f"broker {verb}: pid [bold]{info.pid}[/bold], bootstrap [bold]{info.bootstrap}[/bold]")
    console.print(f"log: {info.log_path}  (memory only: topics are lost when it stops)")


@broker_app.command("stop")
def stop() -> None:
    """Stop the bundled broker."""
    stopped = broker.stop_broker(home=get_settings().home)
    console.print("broker stopped" if stopped else "broker was not running")


@broker_app.command("status")
def status() -> None:
    """Show whether the bundled broker runs, its pid, bootstrap address and uptime."""
    settings = get_settings()
    current = broker.broker_status(home=settings.home)
    if not current.running or current.info is None:
        console.print(f"broker: {current.detail}")
        if settings.kafka_bootstrap:
            console.print(f"SHIRONZI_KAFKA_BOOTSTRAP is set: pipelines use {settings.kafka_bootstrap}")
        return
    info = current.info
    table = Table(show_header=False, box=None)
    table.add_row("status", "[green]running[/green]")
    table.add_row("pid", str(info.pid))
    table.add_row("bootstrap", info.bootstrap)
    table.add_row("uptime", _uptime(info.uptime_seconds))
    table.add_row("started_at", info.started_at.isoformat(timespec="seconds"))
    table.add_row("log", str(info.log_path))
    if settings.kafka_bootstrap:
        table.add_row("note", f"SHIRONZI_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} overrides it")
    console.print(table)


@topics_app.command("create")
def topics_create(
    name: Annotated[str, typer.Argument(help="Topic name.")],
    partitions: Annotated[int, typer.Option(min=1, help="Number of partitions.")] = 4,
    replication: Annotated[int, typer.Option(min=1, help="Replication factor.")] = 1,
    bootstrap: BootstrapOption = None,
) -> None:
    """Create a topic (an existing one with the same partition count is fine)."""
    address = bootstrap or broker.resolve_bootstrap(get_settings())
    created = broker.ensure_topic(address, name, partitions=partitions, replication=replication)
    console.print(
        f"topic {name} {'created' if created else 'already exists'} ({partitions} partitions) on {address}"
    )


@topics_app.command("list")
def topics_list(bootstrap: BootstrapOption = None) -> None:
    """List topics and their partition counts."""
    address = bootstrap or broker.resolve_bootstrap(get_settings())
    topics = broker.list_topics(address)
    if not topics:
        console.print(f"no topics on {address}")
        return
    table = Table("topic", "partitions")
    for name, count in topics.items():
        table.add_row(name, str(count))
    console.print(table)
