"""`shironzi tenants|modules|keys`: run the tenant registry from the command line, as a platform admin."""

from __future__ import annotations

import csv
import getpass
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from shironzi.audit.restore import restore_tenant
from shironzi.errors import InvalidInputError
from shironzi.tenancy import MODULE_REQUIRES, MODULES, PLAN_DEFAULT_MODULES, TenantContext, get_registry
from shironzi.tenancy.catalog import check_module

if TYPE_CHECKING:
    from shironzi.tenancy import KeyRecord, Registry, Tenant, TenantContext

# Piped output is not squeezed into 80 columns: tables stay whole for scripts and logs.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False)

tenants_app = typer.Typer(help="Create, inspect and change tenants.", no_args_is_help=True)
modules_app = typer.Typer(help="The module catalogue and per-tenant module toggles.", no_args_is_help=True)
keys_app = typer.Typer(
    help="Issue, list and revoke API keys; rotate the encryption keys (rotate-master, rotate-tenant).",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TenantArg = Annotated[str, typer.Argument(help="Tenant id (t_...) or slug.")]


def _registry() -> Registry:
    return get_registry()


def _admin_ctx(purpose: str) -> TenantContext:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return TenantContext.admin(actor=f"cli:{user}", purpose=purpose)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _tenant_table(rows: list[Tenant], *, title: str | None = None) -> Table:
    table = Table(title=title)
    for column in ("id", "slug", "name", "industry", "region", "plan", "placement", "status", "created"):
        table.add_column(column)
    for t in rows:
        table.add_row(
            t.id, t.slug, t.name, t.industry, t.region, t.plan, t.placement, t.status, _when(t.created_at)
        )
    return table


def _key_dict(k: KeyRecord) -> dict[str, Any]:
    return {
        "prefix": k.prefix,
        "tenant_id": k.tenant_id,
        "scopes": list(k.scopes),
        "label": k.label,
        "created_at": k.created_at.isoformat(),
        "created_by": k.created_by,
        "expires_at": k.expires_at.isoformat() if k.expires_at else None,
        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
    }


def _key_table(keys: list[KeyRecord]) -> Table:
    table = Table()
    for column in ("prefix", "tenant", "scopes", "label", "created", "expires", "revoked"):
        table.add_column(column)
    now = datetime.now(UTC)
    for k in keys:
        expires = _when(k.expires_at) + (" (expired)" if k.expires_at and k.expires_at <= now else "")
        table.add_row(
            k.prefix,
            k.tenant_id or "(platform)",
            ",".join(k.scopes),
            k.label or "",
            _when(k.created_at),
            expires,
            _when(k.revoked_at),
        )
    return table


# --- tenants ------------------------------------------------------------------------------------------


@tenants_app.command("create")
def create_tenant(
    slug: Annotated[str, typer.Argument(help="Unique slug: 3-63 lowercase letters, digits or '-'.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    industry: Annotated[str, typer.Option(help="ecommerce, healthcare or education.")],
    region: Annotated[str | None, typer.Option(help="Region (default: settings.default_region).")] = None,
    plan: Annotated[str, typer.Option(help="free, standard or enterprise.")] = "standard",
    placement: Annotated[
        str | None, typer.Option(help="pooled or dedicated (default: by plan and industry).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Provision a tenant: registry rows, lake namespace, plan modules and its first API key (shown once)."""
    tenant, key = _registry().provision_tenant(
        _admin_ctx("cli: tenants create"),
        slug=slug,
        name=name,
        industry=industry,
        region=region,
        plan=plan,
        placement=placement,
    )
    if as_json:
        _print_json({"tenant": tenant.to_dict(), "api_key": key})
        return
    console.print(_tenant_table([tenant], title="tenant created"))
    console.print(f"lake namespace: {tenant.lake_namespace}")
    console.print(f"API key (shown once, store it now): {key}")


@tenants_app.command("list")
def list_tenants(
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    industry: Annotated[str | None, typer.Option(help="Only this industry.")] = None,
    plan: Annotated[str | None, typer.Option(help="Only this plan.")] = None,
    region: Annotated[str | None, typer.Option(help="Only this region.")] = None,
    module: Annotated[str | None, typer.Option(help="Only tenants with this module enabled.")] = None,
    limit: Annotated[int, typer.Option(help="Page size.")] = 50,
    offset: Annotated[int, typer.Option(help="Rows to skip.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """List tenants, filtered and paged, ordered by slug."""
    rows, total = _registry().list_tenants(
        status=status, industry=industry, plan=plan, region=region, module=module, limit=limit, offset=offset
    )
    if as_json:
        _print_json(
            {"total": total, "limit": limit, "offset": offset, "tenants": [t.to_dict() for t in rows]}
        )
        return
    console.print(_tenant_table(rows))
    console.print(f"{len(rows)} of {total} tenant(s)")


@tenants_app.command("show")
def show_tenant(tenant: TenantArg, as_json: JsonOption = False) -> None:
    """One tenant with its modules and keys."""
    registry = _registry()
    t = registry.get_tenant(tenant)
    modules = registry.modules(t.id)
    keys = registry.list_keys(t.id)
    if as_json:
        _print_json({**t.to_dict(), "modules": modules, "keys": [_key_dict(k) for k in keys]})
        return
    table = Table(show_header=False, title=f"tenant {t.slug}")
    table.add_column("field", style="bold")
    table.add_column("value")
    for field, value in t.to_dict().items():
        table.add_row(field, str(value))
    table.add_row("modules", ", ".join(modules) or "-")
    active = sum(1 for k in keys if k.revoked_at is None)
    table.add_row("keys", f"{active} active, {len(keys) - active} revoked")
    console.print(table)


@tenants_app.command("suspend")
def suspend_tenant(
    tenant: TenantArg, reason: Annotated[str | None, typer.Option(help="Why (kept on the event).")] = None
) -> None:
    """Suspend an active tenant; its API keys stop working."""
    t = _registry().suspend(_admin_ctx("cli: tenants suspend"), tenant, reason=reason)
    console.print(f"tenant {t.slug} ({t.id}) is now {t.status}")


@tenants_app.command("resume")
def resume_tenant(tenant: TenantArg) -> None:
    """Reactivate a suspended tenant (or cancel an offboarding)."""
    t = _registry().resume(_admin_ctx("cli: tenants resume"), tenant)
    console.print(f"tenant {t.slug} ({t.id}) is now {t.status}")


@tenants_app.command("channel")
def set_tenant_channel(
    tenant: TenantArg,
    channel: Annotated[str, typer.Argument(help="stable, canary or pinned:<model>@<version> (e.g. pinned:churn@3).")],
) -> None:
    """Put a tenant on a release channel: the model versions it is served follow it."""
    t = _registry().set_channel(_admin_ctx("cli: tenants channel"), tenant, channel)
    console.print(f"tenant {t.slug} ({t.id}) now follows the {t.channel} channel")


@tenants_app.command("offboard")
def offboard_tenant(
    tenant: TenantArg,
    reason: Annotated[str | None, typer.Option(help="Why (kept on the event).")] = None,
    complete: Annotated[
        bool, typer.Option("--complete", help="Mark an offboarding tenant deleted (final).")
    ] = False,
) -> None:
    """Start offboarding (keys stop working, data is kept), or with --complete mark it deleted."""
    registry = _registry()
    ctx = _admin_ctx("cli: tenants offboard")
    t = (
        registry.complete_offboarding(ctx, tenant)
        if complete
        else registry.offboard(ctx, tenant, reason=reason)
    )
    console.print(f"tenant {t.slug} ({t.id}) is now {t.status}")


@tenants_app.command("rebuild")
def rebuild_projections() -> None:
    """Replay the event log into fresh tenants/modules/keys projections."""
    result = _registry().rebuild(_admin_ctx("cli: tenants rebuild"))
    console.print(
        f"replayed {result.events} event(s) into {result.tenants} tenant(s), {result.modules} module "
        f"toggle(s) and {result.keys} key(s) in {result.seconds:.2f}s"
    )


@tenants_app.command("import")
def import_tenants(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV (header: slug,name,industry[,region,plan,placement]), .json array or .jsonl of objects."
        ),
    ],
    keys_out: Annotated[
        Path | None,
        typer.Option(help="Write the new API keys (CSV, mode 600) here instead of printing them."),
    ] = None,
) -> None:
    """Bulk-provision tenants; every row is validated first and one bad row rejects the whole file."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if keys_out is not None and keys_out.exists():
        raise InvalidInputError(f"--keys-out {str(keys_out)!r} already exists: refusing to overwrite it")
    progress_bar: Progress | None = None
    tasks: dict[str, Any] = {}

    def on_progress(phase: str, done: int, total: int) -> None:
        nonlocal progress_bar
        if total < 1000:
            return
        if progress_bar is None:
            progress_bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
            progress_bar.start()
        if phase not in tasks:
            tasks[phase] = progress_bar.add_task(phase, total=total)
        progress_bar.update(tasks[phase], completed=done)

    try:
        result = _registry().import_tenants(_admin_ctx("cli: tenants import"), file, progress=on_progress)
    finally:
        if progress_bar is not None:
            progress_bar.stop()
    rate = result.count / result.seconds if result.seconds else float("inf")
    if keys_out is not None:
        fd = os.open(keys_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", newline="") as handle:
            _write_keys_csv(handle, result.tenants)
        console.print(
            f"imported {result.count} tenant(s) in {result.seconds:.2f}s ({rate:,.0f}/s); "
            f"API keys written to {keys_out}"
        )
        return
    console.print(
        f"imported {result.count} tenant(s) in {result.seconds:.2f}s ({rate:,.0f}/s); "
        "API keys below are shown once:"
    )
    sys.stdout.flush()
    _write_keys_csv(sys.stdout, result.tenants)


def _write_keys_csv(handle: Any, provisioned: list[Any]) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["tenant_id", "slug", "api_key"])
    for p in provisioned:
        writer.writerow([p.tenant.id, p.tenant.slug, p.api_key])


# --- modules ------------------------------------------------------------------------------------------


@modules_app.command("list")
def list_modules(
    tenant: Annotated[
        str | None, typer.Argument(help="Show this tenant's toggles (default: the catalogue).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The module catalogue with dependencies and plan defaults, or one tenant's toggles."""
    enabled: set[str] | None = None
    if tenant is not None:
        enabled = set(_registry().modules(tenant))
    rows: list[dict[str, Any]] = [
        {
            "module": m,
            "requires": list(MODULE_REQUIRES.get(m, ())),
            "plans": [p for p, mods in PLAN_DEFAULT_MODULES.items() if m in mods],
            **({"enabled": m in enabled} if enabled is not None else {}),
        }
        for m in MODULES
    ]
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"modules of {tenant}" if tenant else "module catalogue")
    for column in ("module", "requires", "default on plans", *(["enabled"] if enabled is not None else [])):
        table.add_column(column)
    for r in rows:
        extra = ["yes" if r["enabled"] else "no"] if enabled is not None else []
        table.add_row(r["module"], ", ".join(r["requires"]) or "-", ", ".join(r["plans"]), *extra)
    console.print(table)


@modules_app.command("enable")
def enable_module(tenant: TenantArg, module: Annotated[str, typer.Argument(help="Module name.")]) -> None:
    """Switch a module on for a tenant (its dependencies must be on); already on: a no-op that says so."""
    _toggle_module(tenant, module, on=True)


@modules_app.command("disable")
def disable_module(tenant: TenantArg, module: Annotated[str, typer.Argument(help="Module name.")]) -> None:
    """Switch a module off for a tenant (refused while enabled modules depend on it); already off: a no-op."""
    _toggle_module(tenant, module, on=False)


def _toggle_module(tenant: str, module: str, *, on: bool) -> None:
    registry = _registry()
    name = check_module(module)
    current = registry.modules(tenant)
    if (name in current) == on:
        state = "already enabled" if on else "not enabled"
        console.print(f"{name} is {state} for {tenant}; nothing to do (on: {', '.join(current) or '-'})")
        return
    ctx = _admin_ctx(f"cli: modules {'enable' if on else 'disable'}")
    enabled = registry.enable_module(ctx, tenant, name) if on else registry.disable_module(ctx, tenant, name)
    console.print(f"{'enabled' if on else 'disabled'} {name} for {tenant}; now on: {', '.join(enabled) or '-'}")


def _setting_value(text: str) -> Any:
    """A setting's value from the command line: empty resets it, a JSON list (`["a","b"]`) is a list."""
    if not text:
        return None
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"not a JSON list: {text!r}") from exc
    return text


@modules_app.command("set")
def set_module_settings(
    tenant: TenantArg,
    module: Annotated[str, typer.Argument(help="Module name.")],
    values: Annotated[list[str], typer.Argument(help="NAME=VALUE pairs, e.g. inactivity_days=60 (NAME= resets).")],
) -> None:
    """Set a module's per-tenant settings, e.g. `modules set acme-shop churn_prediction inactivity_days=60
    horizon_days=60` (the churn windows; the next `transform` labels with them, `--full-refresh` relabels all),
    or `modules set acme-shop notifications 'webhook_urls=["https://..."]'` (lists as JSON)."""
    pairs: dict[str, Any] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvalidInputError(f"settings are NAME=VALUE pairs, got {item!r}")
        pairs[name.strip()] = _setting_value(value.strip())
    current = _registry().set_module_settings(_admin_ctx("cli: modules set"), tenant, module, pairs)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(current.items())) or "all defaults"
    console.print(f"{module} settings of {tenant}: {shown}")


# --- keys ---------------------------------------------------------------------------------------------


@keys_app.command("issue")
def issue_key(
    tenant: Annotated[str | None, typer.Argument(help="Tenant id or slug (omit with --admin).")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Issue a platform admin key (no tenant).")] = False,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="read, write, admin or phi:read; repeatable.")
    ] = None,
    expires_in_days: Annotated[float | None, typer.Option(help="Expire after this many days.")] = None,
    label: Annotated[str | None, typer.Option(help="A note to recognise the key by.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Issue an API key; the plaintext is printed once and never stored."""
    if admin == (tenant is not None):
        raise InvalidInputError(
            "give either a TENANT or --admin (for a platform admin key), not both or neither"
        )
    if expires_in_days is not None and expires_in_days <= 0:
        raise InvalidInputError(f"--expires-in-days must be positive, got {expires_in_days}")
    scopes = scope or (["admin"] if admin else ["read"])
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    registry = _registry()
    tenant_id = registry.get_tenant(tenant).id if tenant is not None else None
    record, plaintext = registry.issue_key(
        _admin_ctx("cli: keys issue"), tenant_id, scopes=scopes, expires_at=expires_at, label=label
    )
    if as_json:
        _print_json({**_key_dict(record), "api_key": plaintext})
        return
    console.print(_key_table([record]))
    console.print(f"API key (shown once, store it now): {plaintext}")


@keys_app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Argument(help="Tenant id or slug (omit with --admin).")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="List the platform admin keys.")] = False,
    as_json: JsonOption = False,
) -> None:
    """A tenant's keys (or the platform admin keys): prefixes and metadata, never secrets."""
    if admin == (tenant is not None):
        raise InvalidInputError("give either a TENANT or --admin, not both or neither")
    keys = _registry().list_keys(tenant)
    if as_json:
        _print_json([_key_dict(k) for k in keys])
        return
    console.print(_key_table(keys))


@keys_app.command("revoke")
def revoke_key(
    prefix: Annotated[str, typer.Argument(help="The key's prefix (the part after shz_).")],
) -> None:
    """Revoke a key: refused here at once, and by every running API worker within about a second."""
    record = _registry().revoke_key(_admin_ctx("cli: keys revoke"), prefix)
    console.print(f"revoked key {record.prefix} at {_when(record.revoked_at)}")


@tenants_app.command("restore")
def restore_tenant_data(
    tenant: TenantArg,
    to: Annotated[str, typer.Option("--to", help='The moment to restore to, ISO 8601 (e.g. "2026-11-01T00:00:00Z").')],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan and report only; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Restore one tenant's rows in every shared (and its dedicated) table to their state at --to, from Delta
    history; other tenants are untouched, erased subjects stay erased, and the run is audited."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        moment = datetime.fromisoformat(to.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInputError(f"--to must be an ISO 8601 time like 2026-11-01T00:00:00Z, got {to!r}") from exc
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(f"{phase} ({tenant})", total=total)
            bar.update(tasks[phase], completed=done)

        receipt = restore_tenant(_admin_ctx("cli: tenants restore"), tenant, to=moment, dry_run=dry_run,
                                 progress=on_progress)
    if as_json:
        _print_json({k: v for k, v in receipt.__dict__.items()})
        return
    table = Table(title=f"{'dry run: ' if dry_run else ''}tenant {receipt.tenant_id} restored to {receipt.restore_to}")
    for column in ("table", "restore version", "rows before", "rows after", "erased rows dropped", "new version"):
        table.add_column(column)
    for r in receipt.tables:
        table.add_row(r["table"], str(r["restore_version"]), str(r.get("rows_before", "-")), str(r["rows_after"]),
                      str(r["erased_rows_dropped"]), str(r.get("after_version", "-")))
    console.print(table)
    console.print(f"request {receipt.request_id}; {receipt.erasures_reapplied} erasure(s) re-applied")
