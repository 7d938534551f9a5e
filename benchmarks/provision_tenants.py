"""Bulk tenant provisioning: `shironzi tenants import` of N tenants on SQLite and on PostgreSQL.

Targets: 100,000 tenants in <= 60 s on SQLite and <= 120 s on PostgreSQL (read + validate + write,
one transaction, each tenant with its lake namespace, plan modules and a first API key).

    python benchmarks/provision_tenants.py [--tenants 100000] [--postgres-url URL | --skip-postgres]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_SECONDS = {"sqlite": 60.0, "postgresql": 120.0}
INDUSTRIES = ("ecommerce", "healthcare", "education")
PLANS = ("free", "standard", "enterprise")
REGIONS = ("eu-west", "us-east", "ap-south")


def _header(title: str) -> None:
    try:
        from benchmarks._machine import print_header
    except ImportError:  # fall back to the bare facts
        import os
        import platform

        facts = f"{platform.platform()}  python {platform.python_version()}  cpus={os.cpu_count()}"
        print(f"== {title} ==\n{facts}\n")
        return
    print_header(title)


def write_import_file(path: Path, count: int) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slug", "name", "industry", "region", "plan"])
        for i in range(count):
            writer.writerow(
                [
                    f"tenant-{i:07d}",
                    f"Tenant {i}",
                    INDUSTRIES[i % 3],
                    REGIONS[(i // 3) % 3],
                    PLANS[(i // 9) % 3],
                ]
            )
    return path


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A throwaway database on the given server, dropped afterwards."""
    import sqlalchemy as sa

    name = f"shz_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_one(label: str, database_url: str, home: Path, source: Path, count: int) -> dict[str, float]:
    from shironzi.settings import Settings
    from shironzi.tenancy import Registry, TenantContext

    registry = Registry.from_settings(Settings(home=home, database_url=database_url))
    admin = TenantContext.admin(actor="benchmark", purpose="provisioning benchmark")
    try:
        started = time.perf_counter()
        result = registry.import_tenants(admin, source)
        seconds = time.perf_counter() - started
        assert result.count == count and registry.list_tenants(limit=1)[1] == count
        sample = result.tenants[count // 2]
        assert registry.verify_key(sample.api_key).tenant_id == sample.tenant.id

        started = time.perf_counter()
        directory = registry.tenant_directory(fresh=True)
        directory_seconds = time.perf_counter() - started
        assert len(directory) == count
        started = time.perf_counter()
        registry.rebuild(admin)
        rebuild_seconds = time.perf_counter() - started
    finally:
        registry.close()
    backend = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    target = TARGET_SECONDS[backend]
    verdict = "PASS" if seconds <= target else "FAIL"
    print(
        f"{label:<11} {count:>8,} tenants in {seconds:7.2f} s = {count / seconds:>9,.0f} tenants/s   "
        f"target <= {target:.0f} s: {verdict}"
    )
    print(
        f"{'':<11} tenant_directory() {directory_seconds * 1000:7.1f} ms   rebuild() {rebuild_seconds:6.2f} s"
    )
    return {"seconds": seconds, "directory_seconds": directory_seconds, "rebuild_seconds": rebuild_seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=100_000, help="how many tenants to import")
    parser.add_argument(
        "--postgres-url",
        help="a PostgreSQL server URL (postgresql+psycopg://...); a fresh "
        "database is created on it. Default: start a local server",
    )
    parser.add_argument("--skip-postgres", action="store_true", help="only measure SQLite")
    args = parser.parse_args(argv)

    _header(f"bulk provisioning of {args.tenants:,} tenants")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="shz-bench-") as tmp:
        base = Path(tmp)
        source = write_import_file(base / "tenants.csv", args.tenants)
        print(f"import file: {source.stat().st_size / 1e6:.1f} MB CSV\n")

        sqlite = run_one(
            "sqlite", f"sqlite:///{base / 'registry.db'}", base / "home-sqlite", source, args.tenants
        )
        failures += sqlite["seconds"] > TARGET_SECONDS["sqlite"]

        if not args.skip_postgres:
            if args.postgres_url:
                from contextlib import nullcontext

                server = nullcontext(args.postgres_url)
            else:
                from tests._services import postgres_server

                server = postgres_server()
            with server as server_url, fresh_postgres_database(server_url) as url:
                pg = run_one("postgresql", url, base / "home-pg", source, args.tenants)
                failures += pg["seconds"] > TARGET_SECONDS["postgresql"]
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
