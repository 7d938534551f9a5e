"""What auditing costs the real API: the FastAPI app in-process (ASGI, no sockets), the same tenant-data
routes called with auditing on and with the audit writer replaced by a no-op, rounds interleaved.

Needs a SHIRONZI_HOME with a champion model and online features, e.g. after `shironzi demo`:

    .venv/bin/python benchmarks/audit_overhead_api.py --home .shironzi [--requests 2000] [--rounds 6]

Every request below reads tenant data, so every audited request records one buffered audit event (the
background writer flushes them to the Delta audit table while the loop runs). Target: <= 10 % overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


async def _round(client: Any, paths: list[str], headers: dict[str, str], n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        response = await client.get(paths[i % len(paths)], headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"{paths[i % len(paths)]}: {response.status_code} {response.text[:200]}")
    return time.perf_counter() - started


async def _measure(settings: Any, key: str, customers: list[str], requests: int, rounds: int) -> dict[str, list[float]]:
    import httpx

    import shironzi.audit.log as audit_log
    from serving.app import create_app

    app = create_app(settings)
    real_audit = audit_log.audit
    paths = [p for c in customers for p in (f"/v1/customers/{c}/churn", f"/v1/features/{c}")]
    headers = {"Authorization": f"Bearer {key}"}
    times: dict[str, list[float]] = {"audited": [], "unaudited": []}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            await _round(client, paths, headers, 200)  # warm-up: model, caches, first flush
            for _ in range(rounds):
                for mode in ("audited", "unaudited"):
                    audit_log.audit = real_audit if mode == "audited" else (lambda *a, **k: None)
                    try:
                        times[mode].append(await _round(client, paths, headers, requests))
                    finally:
                        audit_log.audit = real_audit
    audit_log.flush_all()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="SHIRONZI_HOME with a champion and online features")
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    os.environ["SHIRONZI_HOME"] = str(args.home.resolve())
    os.environ.setdefault("SHIRONZI_LOG_LEVEL", "WARNING")

    from benchmarks._machine import print_header
    from shironzi.settings import get_settings
    from shironzi.tenancy import TenantContext, get_registry

    print_header("audit overhead on the real API (in-process ASGI)")
    settings = get_settings()
    from serving.smoke import _customer_with_features

    tenant_id, customer = _customer_with_features(settings, set())
    from feature_store.online import open_online_store

    store = open_online_store(settings=settings)
    try:
        customers = sorted({r.entity_key for r in store.iter_rows(tenant_id=tenant_id) if r.entity_key})[:50]
    finally:
        store.close()
    registry = get_registry(settings)
    _, key = registry.issue_key(TenantContext.admin(actor="benchmark", purpose="benchmark"), tenant_id,
                                scopes=["read"], label="audit overhead benchmark")
    times = asyncio.run(_measure(settings, key, customers, args.requests, args.rounds))
    per = 1e6 / args.requests
    audited, plain = times["audited"], times["unaudited"]
    overhead_min = (min(audited) / min(plain) - 1) * 100
    overhead_med = (statistics.median(audited) / statistics.median(plain) - 1) * 100
    print(f"workload      {args.rounds} interleaved rounds x {args.requests:,} requests, {len(customers)} customers, "
          "GET /v1/customers/{id}/churn and GET /v1/features/{id}")
    print(f"unaudited     min {min(plain) * per:8.1f} us/request   median {statistics.median(plain) * per:8.1f}")
    print(f"audited       min {min(audited) * per:8.1f} us/request   median {statistics.median(audited) * per:8.1f}")
    verdict = "PASS" if overhead_min <= 10 else "FAIL"
    print(f"overhead      min-based {overhead_min:+.2f} %   median-based {overhead_med:+.2f} %   "
          f"target <= 10 %: {verdict}")


if __name__ == "__main__":
    main()
