"""`shironzi audit ...`, `shironzi gdpr ...` and `shironzi retention ...`: compliance on the command line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shironzi.audit.digest_signing import load_public_key, public_key_pem, signing_key
from shironzi.audit.digests import write_digests
from shironzi.audit.disclosures import disclosures
from shironzi.audit.erasure import erase_subject, erase_tenant, verify_receipt
from shironzi.audit.evidence import SECTIONS, default_pack_dir, write_evidence_pack
from shironzi.audit.queries import access, as_jsonable, changes, inventory, lineage
from shironzi.audit.retention import enforce_retention, policies
from shironzi.audit.verify import verify_chains
from shironzi.errors import IntegrityCheckError, InvalidInputError
from shironzi.observability import stage
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.registry import get_registry

audit_app = typer.Typer(
    name="audit", help="Audit log: verify the hash chains and query the lake's history.", no_args_is_help=True
)
gdpr_app = typer.Typer(
    name="gdpr", help="Subject and tenant erasure with signed receipts.", no_args_is_help=True
)
retention_app = typer.Typer(
    name="retention", help="Retention policies and their enforcement.", no_args_is_help=True
)
compliance_app = typer.Typer(
    name="compliance", help="SOC 2 evidence: access reviews, changes, audit integrity.", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="Tenant id.")]
ActorOpt = Annotated[str, typer.Option("--actor", help="Who is acting (recorded in the audit log).")]


def _print(payload: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(as_jsonable(payload), indent=2, sort_keys=True, default=str))
        return
    if isinstance(payload, list):
        for item in payload:
            typer.echo(json.dumps(as_jsonable(item), default=str))
    else:
        typer.echo(json.dumps(as_jsonable(payload), indent=2, default=str))


def _when(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInputError(f"not an ISO date/time: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@audit_app.command("verify")
def verify_cmd(
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="Verify the digests with this exported public key (PEM) instead of the "
                     "keystore's signing key: what an auditor does offline."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute every day's hash chain and check the signed digests; exit 1 naming the first failing day or hour."""
    report = verify_chains(public_key=load_public_key(public_key) if public_key is not None else None)
    if as_json:
        _print(report.as_dict(), True)
    elif report.ok:
        typer.echo(f"audit log intact: {report.events} events over {report.days} days; {_digest_summary(report)}")
    if not report.ok and report.broken:
        first = report.broken[0]
        raise IntegrityCheckError(
            f"audit chain broken on {len(report.broken)} day(s); first: {first.day} seq {first.seq}: "
            f"{first.reason} (expected {first.expected}, found {first.found})"
        )
    if report.digests is not None and report.digests.failures:
        failures = report.digests.failures
        first_failure = failures[0]
        found = f" (expected {first_failure.expected}, found {first_failure.found})" if first_failure.expected else ""
        raise IntegrityCheckError(
            f"audit digests do not match the log in {len(failures)} span(s); first: {first_failure.span} "
            f"[{first_failure.digest}]: {first_failure.reason}{found}"
        )
    if not report.ok:
        raise IntegrityCheckError(
            f"audit table changed other than by appending: {'; '.join(report.log_violations[:3])}"
        )


def _digest_summary(report: Any) -> str:
    digests = report.digests
    if digests is None or not digests.digests:
        return "no signed digests yet (run `shironzi audit digest`)"
    through = digests.sealed_through.strftime("%Y-%m-%d %H:%M UTC") if digests.sealed_through else "-"
    return (
        f"{digests.digests} signed digests verified (key {digests.key_fingerprint[:16]}…), sealed through {through}, "
        f"{digests.pending_events} newer event(s) not yet digested"
    )


@audit_app.command("digest")
def digest_cmd(as_json: JsonOpt = False) -> None:
    """Sign a digest for every closed hour and day not digested yet (idempotent; resumes after the newest)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("audit days"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("digest", total=None)
        run = write_digests(progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        _print(run.as_dict(), True)
        return
    through = run.sealed_through.strftime("%Y-%m-%d %H:%M UTC") if run.sealed_through else "nothing yet"
    typer.echo(
        f"{len(run.written)} digest(s) written to {run.root} covering {run.events} event(s); sealed through "
        f"{through}; key {run.key_fingerprint[:16]}…"
    )


@audit_app.command("digest-key")
def digest_key_cmd(
    public: Annotated[
        bool, typer.Option("--public", help="Print the public key (PEM) that verifies the digests.")
    ] = False,
) -> None:
    """Export the digest signing key's public half for offline verification (the private key never leaves the
    keystore)."""
    if not public:
        raise InvalidInputError("only the public key can be exported: use `shironzi audit digest-key --public`")
    typer.echo(public_key_pem(signing_key(create=True).public_key()).decode(), nl=False)


@audit_app.command("access")
def access_cmd(
    tenant: TenantOpt,
    start: Annotated[str | None, typer.Option("--from", help="Start (ISO date/time, UTC).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="End, exclusive (ISO date/time, UTC).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Who accessed a tenant's data in a window, and what they accessed."""
    _print(access(tenant, start=_when(start), end=_when(end)), as_json)


@audit_app.command("disclosures")
def disclosures_cmd(
    tenant: TenantOpt,
    subject: Annotated[str, typer.Option("--subject", "-s", help="The data subject's (patient's, customer's) id.")],
    start: Annotated[str | None, typer.Option("--from", help="Start (ISO date/time, UTC).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="End, exclusive (ISO date/time, UTC).")] = None,
    actor: ActorOpt = "cli:audit",
    as_json: JsonOpt = False,
) -> None:
    """Accounting of disclosures (HIPAA 164.528): every access to one subject's data, through any door."""
    tenant_id = get_registry().get_tenant(tenant).id
    ctx = TenantContext.admin(actor=actor, purpose="accounting_of_disclosures")
    report = disclosures(ctx, tenant_id, subject, start=_when(start), end=_when(end))
    if as_json:
        _print(report, True)
        return
    table = Table(title=f"disclosures of subject {report['subject'] or '(unknown)'} of tenant {tenant_id}")
    for name in ("when", "who", "channel", "purpose", "what", "outcome"):
        table.add_column(name, no_wrap=name in ("when", "who"))
    for row in report["disclosures"]:
        table.add_row(row["when"].isoformat(timespec="seconds"), row["who"], row["channel"], row["purpose"],
                      row["what"], row["outcome"])
    console = Console()
    console.print(table)
    console.print(f"{report['count']} disclosure(s)", markup=False)


@audit_app.command("changes")
def changes_cmd(
    table: Annotated[str, typer.Argument(help="Table URI or path under the lake (eu-west/gold/fct_orders).")],
    as_json: JsonOpt = False,
) -> None:
    """Every change to a table, with the audit events (runs) that caused it."""
    _print(changes(table), as_json)


@audit_app.command("lineage")
def lineage_cmd(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Tables, training runs and models that contain or derive from a tenant's rows."""
    _print(lineage(tenant), as_json)


@audit_app.command("inventory")
def inventory_cmd(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Every table holding a tenant's rows: rows, approximate bytes, oldest and newest."""
    _print(inventory(tenant), as_json)


@gdpr_app.command("erase")
def erase_cmd(
    tenant: TenantOpt,
    subject: Annotated[str, typer.Option("--subject", "-s", help="The data subject's customer id.")],
    actor: ActorOpt = "cli:gdpr",
    out: Annotated[Path | None, typer.Option("--out", help="Also write the receipt to this file.")] = None,
) -> None:
    """Erase one subject of a tenant everywhere, verify it, and print the signed receipt."""
    receipt = erase_subject(TenantContext.admin(actor=actor, purpose="gdpr_erasure"), tenant, subject)
    if out is not None:
        out.write_text(receipt.to_json())
    typer.echo(receipt.to_json())


@gdpr_app.command("erase-tenant")
def erase_tenant_cmd(
    tenant: TenantOpt,
    actor: ActorOpt = "cli:gdpr",
    out: Annotated[Path | None, typer.Option("--out", help="Also write the receipt to this file.")] = None,
) -> None:
    """Erase an offboarding tenant's data everywhere and destroy its key; print the signed receipt."""
    receipt = erase_tenant(TenantContext.admin(actor=actor, purpose="tenant_offboarding"), tenant)
    if out is not None:
        out.write_text(receipt.to_json())
    typer.echo(receipt.to_json())


@gdpr_app.command("verify")
def verify_receipt_cmd(
    receipt: Annotated[str, typer.Argument(help="A receipt JSON file or an erasure request id.")],
    as_json: JsonOpt = False,
) -> None:
    """Re-check a receipt's signature and re-run its verification scan; exit 1 if either fails."""
    check = verify_receipt(receipt)
    if as_json:
        _print(check.as_dict(), True)
    if not check.signature_ok:
        raise IntegrityCheckError(
            f"receipt {check.request_id}: the signature does not match (forged or altered)"
        )
    if not check.verification.ok:
        raise IntegrityCheckError(
            f"receipt {check.request_id}: the subject's data is present again: "
            f"rows={check.verification.matching_rows} log={check.verification.log_mentions} "
            f"targets={check.verification.target_matches} artifacts={check.verification.artifact_matches}"
        )
    if not as_json:
        typer.echo(
            f"receipt {check.request_id} verified: signature valid, "
            f"{check.verification.files_scanned} files and the MLflow artifacts scanned, no trace of the subject"
        )


@retention_app.command("enforce")
def enforce_cmd(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Pretend today is this date (ISO).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be deleted per tenant and table; change nothing.")
    ] = False,
    confirm: Annotated[
        bool,
        typer.Option("--confirm", help="Proceed even when a tenant would lose more than the threshold share."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete expired raw data (counted from ingestion time), one commit per table, and expired audit days."""
    result = enforce_retention(now=_when(as_of), dry_run=dry_run, confirm=confirm)
    if as_json:
        _print(result, True)
        return
    table = Table(title="retention dry run: nothing changed" if dry_run else "retention enforced")
    for name in ("tenant", "table", "counted from", "cutoff", "rows expiring", "of rows", "share"):
        numeric = name in ("rows expiring", "of rows", "share")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=name in ("tenant", "table"))
    for row in result["plan"]:
        table.add_row(row["tenant_id"], row["table"], row["column"], row["cutoff"].date().isoformat(),
                      str(row["expired"]), str(row["total"]), f"{row['share']:.1%}")
    console = Console()
    console.print(table)
    days = result["audit_days_deleted"]
    verb = "would expire" if dry_run else "expired"
    console.print(f"audit log days {verb}: {', '.join(days) if days else 'none'}", markup=False)


@retention_app.command("show")
def show_cmd(as_json: JsonOpt = False) -> None:
    """Every tenant's effective retention policy (days)."""
    _print({tid: {"industry": p.industry, **p.days} for tid, p in policies().items()}, as_json)


@compliance_app.command("evidence")
def evidence_cmd(
    start: Annotated[str | None, typer.Option("--from", help="Start (ISO, UTC); default 90 days ago.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="End, exclusive (ISO date/time, UTC); default now.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="A new or empty directory. Default: SHIRONZI_HOME/evidence/<time>.")
    ] = None,
    actor: ActorOpt = "cli:compliance",
) -> None:
    """Write the SOC 2 evidence pack: one JSON file per section and a self-contained HTML report."""
    console = Console(stderr=True)
    ctx = TenantContext.admin(actor=actor, purpose="soc2_evidence")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with stage("compliance.evidence") as summary, Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("evidence", total=len(SECTIONS))

        def advance(section: str) -> None:
            bar.update(task, description=section, completed=SECTIONS.index(section))

        pack = write_evidence_pack(ctx, out or default_pack_dir(), start=_when(start), end=_when(end),
                                   progress=advance)
        bar.update(task, completed=len(SECTIONS))
        summary.extra.update(directory=str(pack.directory), **pack.manifest["summary"])
    facts = pack.manifest["summary"]
    typer.echo(f"evidence pack written to {pack.directory} (report: {pack.report.name}): {facts['keys']} keys, "
               f"{facts['stale_keys']} stale, {facts['changes']} changes, {facts['erasures']} erasures, "
               f"audit chain {'intact' if facts['audit_chain_ok'] else 'BROKEN'}")
