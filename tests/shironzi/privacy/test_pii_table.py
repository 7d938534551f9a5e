"""Pseudonymisation at landing, the encrypted PII table, `reveal` and crypto-shredding."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from shironzi.audit.log import read_audit_events
from shironzi.errors import InvalidInputError, KeyDestroyedError, NotFoundError, PermissionDeniedError
from shironzi.lake.delta import delete, read_arrow, table_version
from shironzi.privacy.pii_table import PendingPiiRows, pii_table_uri, reveal
from shironzi.privacy.pseudonymise import pseudonymise_batch
from shironzi.privacy.tokens import pseudonym
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.keystore import get_keystore


def _batch() -> pa.Table:
    return pa.table(
        {
            "tenant_id": ["t_a", "t_a", "t_b"],
            "customer_id": ["c_1", "c_2", "c_1"],
            "event_type": ["customer_signed_up", "order_placed", "customer_signed_up"],
            "properties": [
                json.dumps({"email": "ann@example.com", "full_name": "Ann", "plan": "pro"}),
                json.dumps({"order_id": "o1", "shipping_postcode": "SW1A 1AA"}),
                json.dumps({"email": "ann@example.com", "full_name": "Ann B", "plan": "free"}),
            ],
        }
    )


def test_pseudonymise_batch_hashes_pii_per_tenant_and_stores_recoverable_fields(pii_home: Path) -> None:
    store = get_keystore()
    out = pseudonymise_batch(
        _batch(),
        pii_fields=["email", "full_name", "shipping_postcode"],
        recoverable_fields=["email", "full_name"],
    )
    props = [json.loads(p) for p in out.column("properties").to_pylist()]
    assert props[0]["email"] == pseudonym(store.get_key("t_a"), "ann@example.com")
    assert props[0]["plan"] == "pro"  # not PII: untouched
    # Same raw value, different tenants -> different tokens (per-tenant keys).
    assert props[2]["email"] != props[0]["email"]
    assert props[1]["shipping_postcode"].startswith("tok_")
    assert "ann@example.com" not in "".join(out.column("properties").to_pylist())
    stored = read_arrow(pii_table_uri())
    assert sorted(stored.column("field").to_pylist()) == ["email", "email", "full_name", "full_name"]
    assert b"ann@example.com" not in b"".join(stored.column("ciphertext").to_pylist())
    # Idempotent: a second pass leaves tokens alone.
    again = pseudonymise_batch(out, pii_fields=["email", "full_name", "shipping_postcode"])
    assert again.column("properties").to_pylist() == out.column("properties").to_pylist()

    ctx = TenantContext.for_tenant("t_a", actor="support@t_a", purpose="dsar")
    assert reveal(ctx, "t_a", props[0]["email"]) == "ann@example.com"
    with pytest.raises(NotFoundError):  # postcode is PII but not recoverable: never stored
        reveal(ctx, "t_a", props[1]["shipping_postcode"])
    with pytest.raises(PermissionDeniedError):
        reveal(ctx, "t_b", props[2]["email"])
    assert "pii_reveal" in read_audit_events().column("action").to_pylist()


def test_top_level_pii_columns_are_replaced(pii_home: Path) -> None:
    out = pseudonymise_batch(_batch(), pii_fields=["customer_id"])
    key = get_keystore().get_key("t_a")
    assert out.column("customer_id").to_pylist()[0] == pseudonym(key, "c_1")
    with pytest.raises(InvalidInputError):
        pseudonymise_batch(_batch(), pii_fields=["email"], recoverable_fields=["phone"])
    with pytest.raises(InvalidInputError):
        pseudonymise_batch(_batch().drop_columns(["tenant_id"]), pii_fields=["email"])


def test_destroying_a_key_crypto_shreds_the_pii_table(pii_home: Path) -> None:
    store = get_keystore()
    out = pseudonymise_batch(_batch(), pii_fields=["email"], recoverable_fields=["email"])
    token = json.loads(out.column("properties")[0].as_py())["email"]
    ctx = TenantContext.for_tenant("t_a", actor="support@t_a", purpose="dsar")
    assert reveal(ctx, "t_a", token) == "ann@example.com"

    store.destroy_key("t_a")
    with pytest.raises(KeyDestroyedError, match="destroyed"):
        reveal(ctx, "t_a", token)
    with pytest.raises(KeyDestroyedError):
        store.get_or_create_key("t_a")  # a shredded tenant never silently gets a new key
    still_there = read_arrow(pii_table_uri(), filters=[("tenant_id", "=", "t_a"), ("token", "=", token)])
    assert still_there.num_rows == 1  # the ciphertext remains, but is useless
    # The other tenant is unaffected.
    other = json.loads(out.column("properties")[2].as_py())["email"]
    assert (
        reveal(TenantContext.for_tenant("t_b", actor="x", purpose="dsar"), "t_b", other) == "ann@example.com"
    )


def test_a_batch_stores_its_pii_in_one_commit_and_a_foreign_change_is_seen(pii_home: Path) -> None:
    fields = {"pii_fields": ["email", "full_name"], "recoverable_fields": ["email", "full_name"]}
    pseudonymise_batch(_batch().slice(0, 1), **fields)  # creates the PII table (t_a's Ann)
    uri = pii_table_uri()
    version = table_version(uri)

    pending = PendingPiiRows()
    first = pseudonymise_batch(_batch().slice(1, 1), pending=pending, **fields)  # t_a: no recoverable PII
    second = pseudonymise_batch(_batch().slice(2, 1), pending=pending, **fields)  # t_b's Ann B
    assert first.num_rows == second.num_rows == 1
    assert table_version(uri) == version, "pending rows write nothing before store()"
    pending.store()
    assert table_version(uri) == version + 1
    assert sorted(read_arrow(uri).column("tenant_id").to_pylist()) == ["t_a", "t_a", "t_b", "t_b"]

    # Another writer (an erasure) removes t_a's entries: the same value arriving again is stored again,
    # although this process had already seen its token.
    delete(uri, "tenant_id = 't_a'")
    token = json.loads(pseudonymise_batch(_batch().slice(0, 1), **fields).column("properties")[0].as_py())["email"]
    ctx = TenantContext.for_tenant("t_a", actor="support@t_a", purpose="dsar")
    assert reveal(ctx, "t_a", token) == "ann@example.com"
