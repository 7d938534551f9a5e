"""The accounting of disclosures and the SOC 2 evidence pack on a large audit log.

Writes N audit events (API reads naming one pseudonymised customer each, one in fifty a batch read of 100
customers) over D days for T tenants into a real Delta audit table through the real writer, plus a small
real registry (tenants, keys, one stale, a module toggle, a plan change) and one erasure. Prints:
- what naming the subjects costs a request (tokenising one id, and a batch of 1,000, with the cached key);
- one subject's accounting of disclosures over the whole period and over one day (seconds, rows found);
- the evidence pack over the period (seconds; the audit chain verification included).

    .venv/bin/python benchmarks/disclosures.py                               # 1M events, 1,000 tenants, 30 days
    .venv/bin/python benchmarks/disclosures.py --events 100000 --days 7      # quick run
    .venv/bin/python benchmarks/disclosures.py --events 20000 --screenshot docs/img/evidence_pack.png
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from benchmarks._machine import print_header
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    from _machine import print_header  # type: ignore[no-redef]

CHROMIUM = "/usr/bin/chromium"
CHUNK = 50_000


def _registry_world(now: dt.datetime) -> list[str]:
    """Three real tenants with keys (one left unused since long ago), a module toggle, a plan change, and
    one subject erased from a small bronze table; returns the tenant ids."""
    import pyarrow as pa
    import sqlalchemy as sa

    from shironzi.audit.erasure import erase_subject
    from shironzi.lake import append, table_uri
    from shironzi.settings import get_settings
    from shironzi.tenancy import TenantContext, get_registry

    admin = TenantContext.admin(actor="ops:alice", purpose="benchmark setup")
    registry = get_registry()
    made = [registry.provision_tenant(admin, slug=slug, name=name, industry=industry, plan="standard")[0]
            for slug, name, industry in (("northwind", "Northwind", "ecommerce"),
                                         ("st-marys", "St Mary's Clinic", "healthcare"),
                                         ("brightpath", "Brightpath", "education"))]
    old, _ = registry.issue_key(admin, made[1].id, scopes=["read"], label="legacy BI export")
    registry.issue_key(admin, None, scopes=["admin"], label="on-call operator")
    with registry.engine.begin() as conn:
        conn.execute(sa.text("UPDATE api_keys SET created_at = :at WHERE prefix = :p"),
                     {"at": (now - dt.timedelta(days=140)).replace(tzinfo=None), "p": old.prefix})
    registry.disable_module(admin, made[0].id, "trend_forecast")
    registry.change_plan(admin, made[2].id, "enterprise")
    rows = pa.table({"tenant_id": [made[1].id] * 3, "customer_id": ["patient-7", "patient-8", "patient-9"],
                     "event_date": [now.date()] * 3})
    append(table_uri(get_settings().resolved_lake_uri, layer="bronze", table="events", region=made[1].region), rows)
    erase_subject(TenantContext.admin(actor="ops:dpo", purpose="HIPAA patient request"), made[1].id, "patient-7")
    return [t.id for t in made]


def _write_reads(tenants: list[str], events: int, days: int, now: dt.datetime) -> float:
    """N API-read audit events spread over the days, written in chunks by the real writer; seconds."""
    from shironzi.audit.disclosures import subject_tokens
    from shironzi.audit.events import AuditEvent
    from shironzi.audit.log import get_audit_log

    log = get_audit_log()
    start = now - dt.timedelta(days=days)
    step = dt.timedelta(days=days) / events
    started = time.perf_counter()
    chunk: list[AuditEvent] = []
    for i in range(events):
        tenant = tenants[i % len(tenants)]
        batch = i % 50 == 0
        ids = [f"cus_{(i + k) % 5000:05d}" for k in range(100)] if batch else [f"cus_{i % 5000:05d}"]
        chunk.append(AuditEvent(action="api_read", actor=f"key:bench{i % 7}", actor_kind="key", tenant_id=tenant,
                                resource="/v1/churn:batch" if batch else "/v1/customers/{customer_id}/churn",
                                purpose="api", event_time=start + step * i, subjects=subject_tokens(tenant, ids)))
        if len(chunk) >= CHUNK:
            log.record_many(chunk)
            chunk = []
    if chunk:
        log.record_many(chunk)
    return time.perf_counter() - started


def _tokenise_cost(tenant: str) -> tuple[float, float]:
    from shironzi.audit.disclosures import subject_tokens

    subject_tokens(tenant, ["warm"])
    rounds = 20_000
    started = time.perf_counter()
    for i in range(rounds):
        subject_tokens(tenant, [f"cus_{i}"])
    one = (time.perf_counter() - started) / rounds * 1e6
    ids = [f"cus_{i}" for i in range(1000)]
    started = time.perf_counter()
    for _ in range(20):
        subject_tokens(tenant, ids)
    return one, (time.perf_counter() - started) / 20 * 1e3


def _screenshot(report: Path, target: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1500})
            page.goto(report.resolve().as_uri())
            target.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(target))
        finally:
            browser.close()


def run(tenants: int, events: int, days: int, screenshot: Path | None) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="shironzi-disclosures-"))
    os.environ["SHIRONZI_HOME"] = str(home)
    os.environ.setdefault("SHIRONZI_LOG_LEVEL", "WARNING")
    from shironzi.audit.disclosures import disclosures
    from shironzi.audit.evidence import write_evidence_pack
    from shironzi.tenancy import TenantContext

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    real = _registry_world(now)
    ids = real + [f"t_bench{i:05d}" for i in range(max(0, tenants - len(real)))]
    token_us, batch_ms = _tokenise_cost(ids[0])
    write_s = _write_reads(ids, events, days, now - dt.timedelta(minutes=5))
    officer = TenantContext.admin(actor="ops:dpo", purpose="accounting of disclosures")
    timings = {}
    for label, start in (("period", None), ("one day", now - dt.timedelta(days=1))):
        started = time.perf_counter()
        report = disclosures(officer, ids[0], "cus_00042", start=start, end=now)
        timings[label] = (time.perf_counter() - started, report["count"])
    started = time.perf_counter()
    pack = write_evidence_pack(TenantContext.admin(actor="ops:alice", purpose="SOC 2 audit"), home / "pack",
                               start=now - dt.timedelta(days=days + 1), end=now + dt.timedelta(minutes=1), now=now)
    pack_s = time.perf_counter() - started
    if screenshot is not None:
        _screenshot(pack.report, screenshot)
    return {"tenants": len(ids), "events": events, "days": days, "write_s": round(write_s, 1),
            "token_us": round(token_us, 2), "batch_1000_ms": round(batch_ms, 2),
            "query_period_s": round(timings["period"][0], 3), "found_period": timings["period"][1],
            "query_day_s": round(timings["one day"][0], 3), "found_day": timings["one day"][1],
            "pack_s": round(pack_s, 2), "pack_summary": pack.manifest["summary"], "home": str(home)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--screenshot", type=Path, default=None, help="Also save a PNG of the pack's HTML report.")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON too.")
    args = parser.parse_args(argv)
    print_header("accounting of disclosures and the SOC 2 evidence pack")
    f = run(args.tenants, args.events, args.days, args.screenshot)
    print(f"audit log      {f['events']:,} API-read events, {f['tenants']:,} tenants, {f['days']} days "
          f"(written in {f['write_s']} s)")
    print(f"request path   tokenising one subject {f['token_us']} us; a batch of 1,000 {f['batch_1000_ms']} ms")
    print(f"disclosures    whole period {f['query_period_s']} s ({f['found_period']} found); "
          f"one day {f['query_day_s']} s ({f['found_day']} found)")
    print(f"evidence pack  {f['pack_s']} s (chain verification included): {f['pack_summary']}")
    if args.json:
        print(json.dumps(f, indent=2, default=str))
    return f


if __name__ == "__main__":
    main()
