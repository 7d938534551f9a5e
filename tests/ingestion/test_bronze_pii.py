"""PII fields of the contracts are pseudonymised before bronze; recoverable ones can be revealed."""

from __future__ import annotations

import json
from pathlib import Path

from ingestion.bronze import BronzeLander
from ingestion.contracts import decode_json_records
from shironzi.privacy.pii_table import reveal
from shironzi.tenancy import TenantContext
from tests.ingestion._fixtures import provision


def test_signup_pii_is_tokenised_per_tenant_and_revealable(home: Path) -> None:
    one, two = provision([("shop-one", "ecommerce", "standard"), ("shop-two", "ecommerce", "standard")])
    payloads = [
        json.dumps({
            "tenant_id": tenant.id, "event_id": f"e{i}", "customer_id": "c1", "event_type": "customer_signed_up",
            "event_time": "2025-03-01T10:00:00Z",
            "properties": {"email": "ada@example.com", "full_name": "Ada Lovelace", "signup_channel": "web",
                           "plan": "basic"},
        }).encode()
        for i, tenant in enumerate((one, two))
    ]
    lander = BronzeLander()
    decoded = decode_json_records(payloads, ["p/0", "p/1"], source="test")
    valid = lander.validate(decoded, source="test").valid

    assert valid.num_rows == 2
    props = {row["tenant_id"]: json.loads(row["properties"]) for row in valid.to_pylist()}
    assert all("ada@example.com" not in json.dumps(p) and "Ada Lovelace" not in json.dumps(p) for p in props.values())
    assert props[one.id]["email"] != props[two.id]["email"], "keyed hashes must differ per tenant"
    assert props[one.id]["signup_channel"] == "web"
    ctx = TenantContext.admin(actor="test", purpose="pii reveal")
    assert reveal(ctx, one.id, props[one.id]["email"]) == "ada@example.com"
