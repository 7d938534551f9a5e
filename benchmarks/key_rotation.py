"""Key rotation: re-wrapping every tenant key under a new master, and re-encrypting one tenant's PII.

* master: N tenant keys in the local keystore (issued under the old master, not timed), then
  `rotate_master` under the new one; prints keys/s, and the p50/p99 of `get_key` calls that a second
  thread makes all along (reads go on during the rotation: none may fail).
* tenant: M PII table rows of one tenant beside as many of another, then `rotate_tenant`; prints seconds.

    .venv/bin/python benchmarks/key_rotation.py                          # 100,000 keys, 100,000 PII rows
    .venv/bin/python benchmarks/key_rotation.py --keys 20000 --pii-rows 20000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

try:
    from benchmarks._machine import print_header
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    from _machine import print_header  # type: ignore[no-redef]

OLD, NEW = "benchmark-old-master-key", "benchmark-new-master-key"


def _use(home: Path, master: str, previous: str | None) -> None:
    from shironzi.settings import get_settings

    os.environ["SHIRONZI_HOME"] = str(home)
    os.environ["SHIRONZI_MASTER_KEY"] = master
    os.environ.pop("SHIRONZI_PREVIOUS_MASTER_KEY", None)
    if previous:
        os.environ["SHIRONZI_PREVIOUS_MASTER_KEY"] = previous
    get_settings.cache_clear()


def bench_master(home: Path, keys: int) -> None:
    from shironzi.privacy.key_rotation import rotate_master
    from shironzi.tenancy.context import TenantContext
    from shironzi.tenancy.keystore import LocalKeystore, get_keystore

    _use(home, OLD, None)
    store = get_keystore()
    tenants = [f"t_{i:07d}" for i in range(keys)]
    started = time.perf_counter()
    for tenant in tenants:
        store.get_or_create_key(tenant)
    issued = time.perf_counter() - started
    _use(home, NEW, OLD)
    reader = LocalKeystore(home / "keystore", master_key=NEW, previous_master_keys=[OLD])
    latencies: list[float] = []
    failures: list[str] = []
    done = threading.Event()

    def read_all_along() -> None:
        i = 0
        while not done.is_set():
            t0 = time.perf_counter()
            try:
                reader.get_key(tenants[i % keys])
            except Exception as exc:  # noqa: BLE001 - counted and printed: none is expected
                failures.append(f"{type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - t0)
            i += 7919

    thread = threading.Thread(target=read_all_along)
    thread.start()
    started = time.perf_counter()
    result = rotate_master(TenantContext.admin(actor="benchmark", purpose="key rotation benchmark"))
    seconds = time.perf_counter() - started
    done.set()
    thread.join()
    ordered = sorted(latencies)
    p99 = ordered[int(0.99 * (len(ordered) - 1))] * 1000
    print(f"issue {keys:,} keys (setup): {issued:.1f}s")
    print(f"rotate-master: {result.rewrapped:,} keys in {seconds:.2f}s = {result.rewrapped / seconds:,.0f} keys/s")
    print(f"reads during it: {len(latencies):,} get_key calls, p50 {statistics.median(latencies) * 1000:.3f} ms, "
          f"p99 {p99:.3f} ms, failures {len(failures)}{' ' + failures[0] if failures else ''}")


def bench_tenant(home: Path, rows: int) -> None:
    import json

    import pyarrow as pa

    from shironzi.audit.log import get_audit_log
    from shironzi.privacy.key_rotation import rotate_tenant
    from shironzi.privacy.pseudonymise import pseudonymise_batch
    from shironzi.tenancy.context import TenantContext

    _use(home, NEW, None)
    tenants = ["t_rotated", "t_other"]
    batch = pa.table({
        "tenant_id": [t for t in tenants for _ in range(rows)],
        "customer_id": [f"c_{i}" for _ in tenants for i in range(rows)],
        "properties": [json.dumps({"email": f"user{i}@example.com"}) for _ in tenants for i in range(rows)],
    })
    pseudonymise_batch(batch, pii_fields=["email"], recoverable_fields=["email"])
    started = time.perf_counter()
    result = rotate_tenant(TenantContext.admin(actor="benchmark", purpose="key rotation benchmark"), "t_rotated")
    seconds = time.perf_counter() - started
    get_audit_log().flush()
    print(f"rotate-tenant: {result.rows:,} PII rows re-encrypted (beside {rows:,} of another tenant) in "
          f"{seconds:.2f}s, {result.files_removed} file(s) removed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--pii-rows", type=int, default=100_000)
    args = parser.parse_args()
    print_header("key rotation: master re-wrap and tenant PII re-encryption")
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    os.environ["SHIRONZI_LOG_LEVEL"] = "WARNING"
    with tempfile.TemporaryDirectory(prefix="shironzi-key-rotation-") as scratch:
        bench_master(Path(scratch) / "master", args.keys)
        bench_tenant(Path(scratch) / "tenant", args.pii_rows)


if __name__ == "__main__":
    main()
