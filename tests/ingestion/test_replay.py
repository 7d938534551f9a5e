"""Replaying quarantine after a contract fix, on real Delta tables: the rows that pass now land once, a
re-run adds nothing, a crash between the bronze commit and the replay log's commit adds nothing twice."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import ingestion.bronze as bronze
from ingestion.bronze import BronzeLander, LandingBatch, Ledger, run_log_row, run_log_uri
from ingestion.cli import ingest_app
from ingestion.contracts import definitions, registry
from ingestion.replay import quarantine_status, replay_log_uri, replay_quarantine
from shironzi.errors import InvalidStateError, TenantNotFoundError
from tests.ingestion._fixtures import bronze_uri, provision, quarantine_uri, read_all

NEW_TYPE = "loyalty_redeemed"


def _event(tenant: str, event_id: str, event_type: str, properties: dict[str, object], **extra: object) -> bytes:
    record = {"tenant_id": tenant, "event_id": event_id, "customer_id": "c1", "event_type": event_type,
              "event_time": "2025-03-01T10:00:00Z", "properties": properties, **extra}
    return json.dumps(record).encode()


def _land(payloads: list[bytes]) -> None:
    """Land payloads as the stream path would (one unit, one flush) under the contracts of the moment."""
    from ingestion.contracts import decode_json_records

    lander = BronzeLander()
    positions = [f"events/0/{i}" for i in range(len(payloads))]
    decoded = decode_json_records(payloads, positions, source="kafka:events")
    result = lander.validate(decoded, source="kafka:events")
    origins = pl.DataFrame({"position": positions, "_unit": ["u0"] * len(payloads), "_seq": range(len(payloads))},
                           schema={"position": pl.String, "_unit": pl.String, "_seq": pl.Int64})
    batch = LandingBatch.build(result, records=decoded.records.select("tenant_id", "event_id", "position"),
                               origins=origins)
    now = datetime.now(UTC)
    lander.land(batch, ledger=Ledger(run_log_uri(), lambda counts: run_log_row(
        run_id="r", flush=1, source_kind="stream", source_name="events", worker="0/1", started_at=now,
        counts=counts, status="succeeded", positions={})))


@pytest.fixture
def contract_v2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fix: ecommerce@v2 = v1 plus the event type the producer started sending."""
    v2 = copy.deepcopy(definitions.ECOMMERCE_V1)
    v2["version"] = 2
    v2["event_types"][NEW_TYPE] = {"properties": {"points": "int"}}

    def clear() -> None:
        for cached in (registry._contracts, registry.event_type_table, registry.property_table):
            cached.cache_clear()

    monkeypatch.setattr(registry, "SHIPPED_CONTRACTS", [*registry.SHIPPED_CONTRACTS, v2])
    clear()
    yield
    monkeypatch.undo()
    clear()


def _bronze_ids() -> list[str]:
    return sorted(read_all(bronze_uri()).get_column("event_id").to_list())


def test_replay_lands_what_the_fixed_contract_accepts_exactly_once(
    home: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    (tenant,) = provision([("acme", "ecommerce", "standard")])
    t = tenant.id
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    _land([
        _event(t, "ok-1", "session_started", {"session_id": "s1", "device": "web"}),
        *(_event(t, f"loyal-{i}", NEW_TYPE, {"points": i}) for i in range(3)),
        _event(t, "loyal-bad", NEW_TYPE, {"points": "many"}),  # fails v2 too (wrong property type)
        json.dumps({"tenant_id": t, "event_id": "no-customer", "event_type": "session_started"}).encode(),
    ])
    assert _bronze_ids() == ["ok-1"]
    assert read_all(quarantine_uri()).height == 5

    request.getfixturevalue("contract_v2")

    # A crash after bronze's commit, before the replay log's: bronze holds the rows, the log does not.
    def crash(point: str, flush: int) -> None:
        if point == "after_commit":
            raise InvalidStateError("simulated crash after the bronze commit")

    monkeypatch.setattr(bronze, "landing_hook", crash)
    with pytest.raises(InvalidStateError, match="simulated crash"):
        replay_quarantine(reason="unknown_event_type", since=datetime.fromisoformat(since))
    monkeypatch.setattr(bronze, "landing_hook", None)
    assert _bronze_ids() == ["loyal-0", "loyal-1", "loyal-2", "ok-1"]
    assert read_all(replay_log_uri()).is_empty()

    # The re-run finds them in bronze (nothing lands twice) and records them in the replay log.
    cli = CliRunner()
    first = cli.invoke(ingest_app, ["replay-quarantine", "--reason", "unknown_event_type", "--since", since,
                                    "--tenant", "acme"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "already in bronze" in first.output and "wrong_property_type" in first.output
    assert _bronze_ids() == ["loyal-0", "loyal-1", "loyal-2", "ok-1"]
    replayed = read_all(replay_log_uri())
    assert replayed.height == 3 and set(replayed.get_column("reason_code")) == {"unknown_event_type"}
    assert read_all(quarantine_uri()).height == 5  # quarantine is history: nothing removed, nothing added

    again = replay_quarantine(reason="unknown_event_type", since=datetime.fromisoformat(since))
    assert (again.selected, again.already_replayed, again.replayed) == (4, 3, 0)
    assert again.still_failing == {"wrong_property_type": 1}
    assert _bronze_ids() == ["loyal-0", "loyal-1", "loyal-2", "ok-1"]
    assert read_all(replay_log_uri()).height == 3

    status = quarantine_status(since=datetime.fromisoformat(since))
    assert status.rows() == [("missing_field", 1, 0), ("unknown_event_type", 4, 3)]
    shown = cli.invoke(ingest_app, ["quarantine", "--since", since], catch_exceptions=False)
    assert "unknown_event_type" in shown.output

    from shironzi.audit import read_audit_events

    audited = read_audit_events(filters=[("action", "=", "quarantine_replayed")]).to_pylist()
    assert len(audited) == 2 and {e["outcome"] for e in audited} == {"success"}  # the two completed replays


def test_replay_refuses_bad_input_and_changes_nothing(home: Path) -> None:
    provision([("acme", "ecommerce", "standard")])
    result = CliRunner().invoke(ingest_app, ["replay-quarantine", "--reason", "x", "--since", "yesterday"])
    assert result.exit_code != 0 and "--since must be an ISO date" in str(result.exception)
    with pytest.raises(TenantNotFoundError):
        replay_quarantine(reason="unknown_event_type", since=datetime.now(UTC), tenant_id="nobody")
    assert read_all(replay_log_uri()).is_empty() and read_all(bronze_uri()).is_empty()
