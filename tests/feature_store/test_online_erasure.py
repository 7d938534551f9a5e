"""A GDPR erasure reaches the online feature store through the `shironzi.erasure_targets` plugin."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from feature_store.online import OnlineRow, open_online_store
from shironzi.audit.erasure import erase_subject, verify_receipt
from shironzi.lake import append
from shironzi.lake.paths import table_uri
from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext


def test_erasure_deletes_and_verifies_the_subject_in_the_online_store(home: Path) -> None:
    now = datetime(2026, 1, 5, tzinfo=UTC)
    store = open_online_store()
    store.write_rows(
        OnlineRow(tenant, "customer_activity_v1", customer, now, {"events_30d": 3})
        for tenant in ("t_a", "t_b")
        for customer in ("c_1", "c_12")
    )
    store.close()
    bronze = table_uri(get_settings().resolved_lake_uri, layer="bronze", table="events", region="eu-west")
    append(bronze, pa.table({"tenant_id": ["t_a", "t_a"], "customer_id": ["c_1", "c_12"], "event_id": ["e1", "e2"]}))

    receipt = erase_subject(TenantContext.admin(actor="test", purpose="gdpr"), "t_a", "c_1")

    assert receipt.targets.get("online_store") == 1
    store = open_online_store()
    left = sorted((r.tenant_id, r.entity_key) for r in store.iter_rows())
    store.close()
    assert left == [("t_a", "c_12"), ("t_b", "c_1"), ("t_b", "c_12")]
    assert verify_receipt(receipt).ok


def test_verification_finds_a_subject_left_in_another_rows_features(home: Path) -> None:
    """The online-store scan reads only the rows whose key or JSON names the subject, and still finds it
    inside another customer's feature values."""
    from shironzi.audit.erasure import verify_erased
    from shironzi.audit.erasure_scan import Matcher, subject_digest

    now = datetime(2026, 1, 5, tzinfo=UTC)
    store = open_online_store()
    store.write_rows([OnlineRow("t_a", "customer_activity_v1", "d_7", now, {"events_30d": 3}),
                      OnlineRow("t_a", "customer_trends_v1", "d_7", now, {"referred_by": "c_1"}),
                      OnlineRow("t_b", "customer_trends_v1", "d_7", now, {"referred_by": "c_1"})])
    store.close()
    matcher = Matcher("t_a", "subject", frozenset({subject_digest("t_a", "c_1")}), values=frozenset({"c_1"}))
    assert matcher.verbatim_values() == ["c_1"]  # the pre-filter is in use
    assert verify_erased(matcher, tables=[]).target_matches == {"online_store": 1}
