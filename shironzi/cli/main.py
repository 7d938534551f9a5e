"""Entry point of the `shironzi` CLI.

Kernel command groups are registered here. Command groups from the other top-level
packages (ingestion, dbt, features, models, serving, demo ...) register themselves as
plugins through the `shironzi.cli` entry-point group, so the kernel never imports them.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points

import typer
from rich.console import Console

from shironzi.cli import groups
from shironzi.errors import ShironziError
from shironzi.observability import configure_logging
from shironzi.settings import get_settings

try:  # typer >= 0.20 vendors its own click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer on upstream click
    from click.exceptions import ClickException, NoArgsIsHelpError  # type: ignore[assignment,no-redef,attr-defined]

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    name="shironzi",
    help="Shironzi: a multi-tenant lakehouse platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


_registered = False


def register_commands() -> typer.Typer:
    """Attach the kernel groups and the plugins to `app` once per process."""
    global _registered
    if not _registered:
        _register_kernel_groups()
        _register_plugins()
        _registered = True
    return app


def _register_kernel_groups() -> None:
    for name, sub in groups.kernel_groups():
        app.add_typer(sub, name=name)


_SHARED_GROUP_HELP = {
    "serve": "Run a server: the platform API (`serve api`) or the dashboards (`serve dashboard`).",
    "monitor": "Platform monitoring: the metrics process (`monitor serve`), the health report (`monitor status`) "
               "and the per-tenant data monitors and anomalies (`monitor tenants`).",
}


def _register_plugins() -> None:
    """A plugin named `group.command` joins a shared group (`shironzi serve api`, `shironzi serve dashboard`),
    or a kernel group of that name (`shironzi dr drill`)."""
    shared: dict[str, typer.Typer] = dict(groups.kernel_groups())
    for ep in sorted(entry_points(group="shironzi.cli"), key=lambda e: e.name):
        try:
            target = ep.load()
        except ImportError as exc:  # the plugin's extra is not installed: the command is not offered
            logging.getLogger("shironzi.cli").debug("plugin %s unavailable: %s", ep.name, exc)
            continue
        parent, name = app, ep.name
        if "." in ep.name:
            group, name = ep.name.split(".", 1)
            if group not in shared:
                shared[group] = typer.Typer(name=group, no_args_is_help=True,
                                            help=_SHARED_GROUP_HELP.get(group, f"{group} commands"))
                app.add_typer(shared[group], name=group)
            parent = shared[group]
        if isinstance(target, typer.Typer):
            parent.add_typer(target, name=name)
        else:  # a plain function becomes a command
            parent.command(name=name)(target)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def run(argv: list[str] | None = None) -> None:
    """Console-script entry: one readable error line and a non-zero exit, never a traceback."""
    try:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format)
        register_commands()
        app(args=argv, standalone_mode=False)
    except ShironziError as exc:
        err_console.print(f"error: {exc.code}: {_one_line(exc.message)}", markup=False)
        sys.exit(1)
    except typer.Abort:
        err_console.print("error: aborted", markup=False)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except NoArgsIsHelpError as exc:
        err_console.print(exc.format_message(), markup=False)
        sys.exit(2)
    except ClickException as exc:
        err_console.print(f"error: {_one_line(exc.format_message())}", markup=False)
        sys.exit(exc.exit_code or 2)
    except KeyboardInterrupt:
        err_console.print("error: interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
        err_console.print(f"error: internal: {type(exc).__name__}: {_one_line(str(exc))}", markup=False)
        sys.exit(1)


if __name__ == "__main__":
    run()
