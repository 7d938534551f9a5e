"""BronzeLander on real Delta tables: routing, dedup, quarantine, txn recovery, reconciliation."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from ingestion.bronze import BronzeLander, LandingBatch, Ledger, read_run_log, run_log_row, run_log_uri
from tests._services import S3Server
from tests.ingestion._fixtures import bronze_uri, provision, quarantine_uri, read_all


def _payload(
    tenant: str, event_id: str, *, event_type: str = "order_placed", day: str = "2025-03-01"
) -> bytes:
    props = {"order_id": "o-" + event_id, "items": 2, "channel": "web"}
    return json.dumps(
        {
            "tenant_id": tenant,
            "event_id": event_id,
            "customer_id": "c1",
            "event_type": event_type,
            "event_time": f"{day}T10:00:00Z",
            "amount": 10.5,
            "currency": "EUR",
            "properties": props,
        }
    ).encode()


def _batch(
    lander: BronzeLander, payloads: list[bytes], *, unit: str = "u0", first_seq: int = 0
) -> LandingBatch:
    from ingestion.contracts import decode_json_records

    positions = [f"{unit}/{first_seq + i}" for i in range(len(payloads))]
    decoded = decode_json_records(payloads, positions, source="test")
    result = lander.validate(decoded, source="test")
    origins = pl.DataFrame(
        {
            "position": positions,
            "_unit": [unit] * len(payloads),
            "_seq": list(range(first_seq, first_seq + len(payloads))),
        },
        schema={"position": pl.String, "_unit": pl.String, "_seq": pl.Int64},
    )
    return LandingBatch.build(
        result, records=decoded.records.select("tenant_id", "event_id", "position"), origins=origins
    )


def _ledger() -> Ledger:
    from datetime import UTC, datetime

    return Ledger(
        run_log_uri(),
        lambda counts: run_log_row(
            run_id="r",
            flush=1,
            source_kind="stream",
            source_name="test",
            worker="0/1",
            started_at=datetime.now(UTC),
            counts=counts,
            status="succeeded",
        ),
    )


def _ecommerce_props_ok() -> bool:
    from ingestion.contracts import get_contract

    return "order_placed" in get_contract("ecommerce").event_type_names


@pytest.fixture
def tenants(home: Path) -> dict[str, str]:
    assert _ecommerce_props_ok()
    pooled, dedicated, other = provision(
        [
            ("shop-one", "ecommerce", "standard"),
            ("shop-two", "ecommerce", "enterprise"),
            ("shop-three", "ecommerce", "free"),
        ],
        placement={"shop-two": "dedicated"},
    )
    return {"pooled": pooled.id, "dedicated": dedicated.id, "other": other.id}


def _valid_payloads(tenant: str, n: int, prefix: str = "e") -> list[bytes]:
    from ingestion.contracts import get_contract

    spec = get_contract("ecommerce").event_type("order_placed")
    out = []
    for i in range(n):
        props = {
            p.name: {
                "string": "x",
                "int": 1,
                "float": 1.5,
                "bool": True,
                "timestamp": "2025-03-01T00:00:00Z",
            }[p.type]
            for p in spec.properties
        }
        out.append(
            json.dumps(
                {
                    "tenant_id": tenant,
                    "event_id": f"{prefix}{i}",
                    "customer_id": "c1",
                    "event_type": "order_placed",
                    "event_time": f"2025-03-0{1 + i % 3}T10:00:00Z",
                    "amount": 10.5,
                    "currency": "EUR",
                    "properties": props,
                }
            ).encode()
        )
    return out


def test_routes_pooled_and_dedicated_and_reconciles(tenants: dict[str, str]) -> None:
    lander = BronzeLander()
    payloads = _valid_payloads(tenants["pooled"], 5) + _valid_payloads(tenants["dedicated"], 4)
    payloads += [b"not json", _valid_payloads("ghost-tenant", 1)[0], _valid_payloads(tenants["pooled"], 1)[0]]
    counts = lander.land(_batch(lander, payloads), ledger=_ledger())
    assert counts.balanced()
    assert (counts.received, counts.landed, counts.quarantined, counts.duplicates_in_batch) == (12, 9, 2, 1)
    pooled = read_all(bronze_uri())
    dedicated = read_all(bronze_uri(tenant_id=tenants["dedicated"]))
    assert set(pooled.get_column("tenant_id")) == {tenants["pooled"]}
    assert set(dedicated.get_column("tenant_id")) == {tenants["dedicated"]}
    assert pooled.height == 5 and dedicated.height == 4
    quarantine = read_all(quarantine_uri())
    assert sorted(quarantine.get_column("reason_code")) == ["malformed_json", "unknown_tenant"]
    assert read_run_log().get_column("landed").to_list() == [9]


def test_already_landed_keys_are_skipped_across_lander_restarts(tenants: dict[str, str]) -> None:
    BronzeLander().land(_batch(BronzeLander(), _valid_payloads(tenants["pooled"], 6)), ledger=_ledger())
    fresh = BronzeLander()  # a new process: the key cache is rebuilt from Delta
    batch = _batch(fresh, _valid_payloads(tenants["pooled"], 8), unit="u1")
    counts = fresh.land(batch, ledger=_ledger())
    assert (counts.landed, counts.duplicates_existing) == (2, 6) and counts.balanced()
    assert read_all(bronze_uri()).height == 8


def test_rows_a_table_already_committed_under_its_txn_are_recovered_not_duplicated(
    tenants: dict[str, str],
) -> None:
    from shironzi.lake import txn_version

    lander = BronzeLander()
    payloads = _valid_payloads(tenants["pooled"], 4) + [b"{broken"]
    lander.land(_batch(lander, payloads, unit="p0"), ledger=_ledger())
    assert txn_version(bronze_uri(), "p0") == 4 and txn_version(quarantine_uri(), "p0") == 4
    again = BronzeLander()
    counts = again.land(
        _batch(again, payloads, unit="p0", first_seq=0),
        ledger=Ledger(run_log_uri() + "-other", _ledger().rows),
    )
    assert counts.recovered == 5 and counts.landed == 4 and counts.quarantined == 1
    assert read_all(bronze_uri()).height == 4 and read_all(quarantine_uri()).height == 1


def test_suspended_tenant_events_are_quarantined_never_landed(tenants: dict[str, str]) -> None:
    from shironzi.tenancy import TenantContext, get_registry

    get_registry().suspend(TenantContext.admin(actor="test", purpose="suspend"), tenants["other"])
    lander = BronzeLander()
    counts = lander.land(_batch(lander, _valid_payloads(tenants["other"], 3)), ledger=_ledger())
    assert counts.landed == 0 and counts.quarantined == 3
    assert set(read_all(quarantine_uri()).get_column("reason_code")) == {"tenant_inactive"}
    assert read_all(bronze_uri()).is_empty()


@pytest.mark.integration
def test_s3_landing_stages_files_then_commits_through_the_same_path(
    tenants: dict[str, str], s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object-store lake takes the local lake's commit path: files are staged, then committed with the
    txns; a landing stopped between the two commits nothing and the next one lands every row once."""
    import uuid

    import ingestion.bronze as bronze
    from shironzi.lake import txn_version
    from shironzi.settings import get_settings

    monkeypatch.setenv("SHIRONZI_LAKE_URI", s3.create_bucket(f"bronze-{uuid.uuid4().hex[:8]}"))
    monkeypatch.setenv("SHIRONZI_STORAGE_OPTIONS", json.dumps(s3.storage_options()))
    get_settings.cache_clear()
    reached: list[str] = []

    def stop_after_write(point: str, flush: int) -> None:
        reached.append(point)
        if point == "after_write":
            raise RuntimeError("stopped between staging and commit")

    monkeypatch.setattr(bronze, "landing_hook", stop_after_write)
    payloads = _valid_payloads(tenants["pooled"], 6)
    lander = BronzeLander()
    with pytest.raises(RuntimeError, match="stopped"):
        lander.land(_batch(lander, payloads, unit="p0"), ledger=_ledger())
    assert reached == ["before_write", "after_write"]
    assert read_all(bronze_uri()).is_empty()  # staged files only: nothing visible
    monkeypatch.setattr(bronze, "landing_hook", None)
    again = BronzeLander()
    counts = again.land(_batch(again, payloads, unit="p0"), ledger=_ledger())
    assert counts.landed == 6 and counts.balanced()
    assert read_all(bronze_uri()).height == 6 and txn_version(bronze_uri(), "p0") == 5
    assert bronze_uri().startswith("s3://")
