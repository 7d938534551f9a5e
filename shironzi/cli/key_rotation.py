"""`shironzi keys rotate-master|rotate-tenant`: rotate the keystore's master key and a tenant's data key.

The new master key never appears on the command line (it would land in shell history and `ps`): it is
`SHIRONZI_MASTER_KEY` itself, or the environment variable named by `--new-master-key-env`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from shironzi.cli.tenants import _admin_ctx, _registry, console, err_console
from shironzi.errors import InvalidInputError
from shironzi.privacy.key_rotation import rotate_master, rotate_tenant
from shironzi.settings import PLACEHOLDER_SECRETS, get_settings
from shironzi.tenancy.keystore import TenantKeystore, keystore_for_url

PROGRESS_FROM = 1000  # keys: fewer finish before a bar would be worth drawing


def register(keys_app: typer.Typer) -> None:
    """Add the rotation commands to the `keys` group."""
    keys_app.command("rotate-master")(rotate_master_command)
    keys_app.command("rotate-tenant")(rotate_tenant_command)


def rotate_master_command(
    new_master_key_env: Annotated[
        str | None,
        typer.Option(
            help="Name of the environment variable holding the new master key (default: SHIRONZI_MASTER_KEY "
            "is the new key and SHIRONZI_PREVIOUS_MASTER_KEY the retiring one). Never the key itself."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Keys re-wrapped per transaction.")] = 500,
) -> None:
    """Re-wrap every tenant key under a new master key while reads go on; run it again after a crash."""
    with _progress_bar(err_console, "re-wrapping keys") as progress:
        result = rotate_master(
            _admin_ctx("cli: keys rotate-master"),
            keystore=_rotation_keystore(new_master_key_env),
            batch_size=batch_size,
            progress=progress,
        )
    retired = ", ".join(map(str, result.retired_generations)) or "none"
    console.print(
        f"re-wrapped {result.rewrapped} key(s) under master generation {result.generation} in "
        f"{result.seconds:.2f}s; generation(s) retired: {retired}. Every key now opens with the new master: "
        "drop the retiring master key from every process."
    )


def _rotation_keystore(variable: str | None) -> TenantKeystore | None:
    """The keystore to rotate: the configured one, or one whose current master is the key in `variable`
    (the configured masters become the retiring ones)."""
    if variable is None:
        return None
    new_master = os.environ.get(variable, "")
    if not new_master.strip():
        raise InvalidInputError(f"--new-master-key-env: the environment variable {variable} is not set or empty")
    settings = get_settings()
    current = settings.master_key.get_secret_value()
    if new_master == current:
        raise InvalidInputError(f"--new-master-key-env: {variable} holds the current master key, not a new one")
    if new_master in PLACEHOLDER_SECRETS and settings.env == "prod":
        raise InvalidInputError(f"--new-master-key-env: {variable} holds a placeholder, not a real secret")
    previous = [current] + ([settings.previous_master_key.get_secret_value()] if settings.previous_master_key else [])
    return keystore_for_url(settings.resolved_secrets_url, master_key=new_master, previous_master_keys=previous)


def rotate_tenant_command(
    tenant: Annotated[str, typer.Argument(help="Tenant id (t_...) or slug.")],
) -> None:
    """A new data key for a tenant: its vaulted PII is re-encrypted under it, then the old key is destroyed.

    The tenant key behind its pseudonyms (tokens) is not rotated: tokens in the lake stay stable."""
    tenant_id = _registry().get_tenant(tenant).id
    result = rotate_tenant(_admin_ctx("cli: keys rotate-tenant"), tenant_id)
    retired = ", ".join(map(str, result.retired_versions)) or "none"
    console.print(
        f"tenant {tenant_id}: {result.rows} PII row(s) re-encrypted under data key version {result.version}"
        f"{' (resumed)' if result.resumed else ''}; {result.files_removed} old file(s) removed; "
        f"version(s) destroyed: {retired}"
    )


@contextmanager
def _progress_bar(console: Any, description: str) -> Iterator[Any]:
    """A progress callback `(done, total)` that draws a rich bar once the work is worth one."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, transient=True)
    task: list[Any] = []

    def update(done: int, total: int) -> None:
        if total < PROGRESS_FROM:
            return
        if not task:
            bar.start()
            task.append(bar.add_task(description, total=total))
        bar.update(task[0], completed=done, total=total)

    try:
        yield update
    finally:
        if task:
            bar.stop()
