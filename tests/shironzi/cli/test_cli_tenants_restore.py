"""`shironzi tenants restore`: a dry run, a restore, and bad input as one error line with nothing changed."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable

import pyarrow as pa

from shironzi.lake.delta import append, read_arrow, table_version
from shironzi.lake.paths import table_uri
from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext, get_registry
from tests.shironzi.cli._fixtures import CliResult


def _events(tenant: str, customers: list[str]) -> pa.Table:
    return pa.table({"tenant_id": [tenant] * len(customers), "customer_id": customers,
                     "amount": [1.0] * len(customers)})


def test_restore_command(cli: Callable[..., CliResult]) -> None:
    admin = TenantContext.admin(actor="test", purpose="setup")
    tenant, _ = get_registry().provision_tenant(admin, slug="acme-shop", name="Acme", industry="ecommerce",
                                                placement="pooled")
    other, _ = get_registry().provision_tenant(admin, slug="beta-shop", name="Beta", industry="ecommerce",
                                               placement="pooled")
    events = table_uri(get_settings().resolved_lake_uri, layer="bronze", table="events", region="eu-west")
    append(events, pa.concat_tables([_events(tenant.id, ["c_1", "c_2"]), _events(other.id, ["c_1"])]))
    time.sleep(0.02)
    moment = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.02)
    append(events, _events(tenant.id, ["bad_1", "bad_2", "bad_3"]))
    version = table_version(events)

    code, out, _ = cli("tenants", "restore", "acme-shop", "--to", moment, "--dry-run", "--json")
    assert code == 0 and json.loads(out)["tables"][0]["rows_after"] == 2 and table_version(events) == version

    code, out, err = cli("tenants", "restore", "acme-shop", "--to", moment)
    assert code == 0, err
    assert "rows after" in out and table_version(events) == version + 1
    assert sorted(read_arrow(events, tenant_id=tenant.id).column("customer_id").to_pylist()) == ["c_1", "c_2"]
    assert read_arrow(events, tenant_id=other.id).column("customer_id").to_pylist() == ["c_1"]

    for args, message in (
        (("acme-shop", "--to", "yesterday"), "ISO 8601"),
        (("acme-shop", "--to", "2000-01-01T00:00:00Z"), "did not exist"),
        (("acme-shop", "--to", "2999-01-01T00:00:00Z"), "future"),
        (("no-such-shop", "--to", moment), "no-such-shop"),
    ):
        code, _, err = cli("tenants", "restore", *args)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 1 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert table_version(events) == version + 1
