"""Tenant keys, pseudonymisation at landing, the encrypted PII vault and crypto-shredding."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from shironzi.audit.log import read_audit_events, reset_audit_logs
from shironzi.errors import InvalidInputError, KeyDestroyedError, NotFoundError, PermissionDeniedError
from shironzi.lake.delta import read_arrow
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.keystore import (
    LocalKeystore,
    get_keystore,
    pseudonym,
    pseudonymise_batch,
    reveal,
    vault_table_uri,
)


@pytest.fixture
def keystore_home(home: Path):  # type: ignore[no-untyped-def]
    reset_audit_logs()
    yield home
    reset_audit_logs()


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


def test_local_keystore_encrypts_keys_at_rest_and_is_stable(keystore_home: Path) -> None:
    store = get_keystore()
    assert isinstance(store, LocalKeystore)
    key = store.get_or_create_key("t_a")
    assert len(key) == 32 and store.get_or_create_key("t_a") == key
    assert store.get_or_create_key("t_b") != key
    text = store.path.read_text()
    assert key.hex() not in text and "wrapped" in text
    wrong = LocalKeystore(store.directory, master_key="another-master-key")
    with pytest.raises(Exception, match="SHIRONZI_MASTER_KEY"):
        wrong.get_key("t_a")
    with pytest.raises(NotFoundError):
        store.get_key("t_unknown")


def test_a_key_destroyed_by_another_keystore_stops_working_here_at_once(keystore_home: Path) -> None:
    """The keystore caches its file and the scrypt wrapping key, never a tenant key past a destroy."""
    store = get_keystore()
    other = LocalKeystore(store.directory, master_key="dev-master-key-change-me")
    other._master_key = store._master_key  # the same master key, another process's instance
    key = store.get_or_create_key("t_a")
    assert other.get_key("t_a") == key and store.get_key("t_a") == key  # both have read (and cached) the file
    other.destroy_key("t_a")
    with pytest.raises(KeyDestroyedError):
        store.get_key("t_a")
    with pytest.raises(KeyDestroyedError):
        store.get_or_create_key("t_a")
    assert store.get_or_create_key("t_b") != key  # writes after a foreign write keep the other entries
    assert json.loads(store.path.read_text())["keys"]["t_a"]["destroyed_at"]


def test_pseudonymise_batch_hashes_pii_per_tenant_and_vaults_recoverable_fields(keystore_home: Path) -> None:
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
    vault = read_arrow(vault_table_uri())
    assert sorted(vault.column("field").to_pylist()) == ["email", "email", "full_name", "full_name"]
    assert b"ann@example.com" not in b"".join(vault.column("ciphertext").to_pylist())
    # Idempotent: a second pass leaves tokens alone.
    again = pseudonymise_batch(out, pii_fields=["email", "full_name", "shipping_postcode"])
    assert again.column("properties").to_pylist() == out.column("properties").to_pylist()

    ctx = TenantContext.for_tenant("t_a", actor="support@t_a", purpose="dsar")
    assert reveal(ctx, "t_a", props[0]["email"]) == "ann@example.com"
    with pytest.raises(NotFoundError):  # postcode is PII but not recoverable: never vaulted
        reveal(ctx, "t_a", props[1]["shipping_postcode"])
    with pytest.raises(PermissionDeniedError):
        reveal(ctx, "t_b", props[2]["email"])
    assert "pii_reveal" in read_audit_events().column("action").to_pylist()


def test_top_level_pii_columns_are_replaced(keystore_home: Path) -> None:
    out = pseudonymise_batch(_batch(), pii_fields=["customer_id"])
    key = get_keystore().get_key("t_a")
    assert out.column("customer_id").to_pylist()[0] == pseudonym(key, "c_1")
    with pytest.raises(InvalidInputError):
        pseudonymise_batch(_batch(), pii_fields=["email"], recoverable_fields=["phone"])
    with pytest.raises(InvalidInputError):
        pseudonymise_batch(_batch().drop_columns(["tenant_id"]), pii_fields=["email"])


def test_destroying_a_key_crypto_shreds_the_vault(keystore_home: Path) -> None:
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
    still_there = read_arrow(vault_table_uri(), filters=[("tenant_id", "=", "t_a"), ("token", "=", token)])
    assert still_there.num_rows == 1  # the ciphertext remains, but is useless
    # The other tenant is unaffected.
    other = json.loads(out.column("properties")[2].as_py())["email"]
    assert (
        reveal(TenantContext.for_tenant("t_b", actor="x", purpose="dsar"), "t_b", other) == "ann@example.com"
    )


def test_vault_url_selects_vault_and_an_unreachable_vault_is_one_clear_error() -> None:
    """The Vault backend (hvac, KV v2) is chosen by URL; no Vault server runs on this machine, so its
    round trip is not exercised here, but a Vault that cannot be reached must fail readably."""
    import socket

    from shironzi.errors import ServiceUnavailableError
    from shironzi.tenancy.keystore import VaultKeystore, keystore_for_url

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    store = keystore_for_url(f"vault+http://127.0.0.1:{port}/kv", master_key="unused")
    assert isinstance(store, VaultKeystore) and store.mount_point == "kv"
    with pytest.raises(ServiceUnavailableError, match=f"Vault at http://127.0.0.1:{port} could not read"):
        store.get_key("t_a")
    with pytest.raises(ServiceUnavailableError):
        store.destroy_key("t_a")


def test_a_batch_vaults_in_one_commit_and_a_foreign_vault_change_is_seen(keystore_home: Path) -> None:
    from shironzi.lake.delta import delete, table_version
    from shironzi.tenancy.keystore import PendingVault

    fields = {"pii_fields": ["email", "full_name"], "recoverable_fields": ["email", "full_name"]}
    pseudonymise_batch(_batch().slice(0, 1), **fields)  # creates the vault (t_a's Ann)
    uri = vault_table_uri()
    version = table_version(uri)

    pending = PendingVault()
    first = pseudonymise_batch(_batch().slice(1, 1), pending=pending, **fields)  # t_a: no recoverable PII
    second = pseudonymise_batch(_batch().slice(2, 1), pending=pending, **fields)  # t_b's Ann B
    assert first.num_rows == second.num_rows == 1
    assert table_version(uri) == version, "a pending vault writes nothing before store()"
    pending.store()
    assert table_version(uri) == version + 1
    assert sorted(read_arrow(uri).column("tenant_id").to_pylist()) == ["t_a", "t_a", "t_b", "t_b"]

    # Another writer (an erasure) removes t_a's entries: the same value arriving again is vaulted again,
    # although this process had already seen its token.
    delete(uri, "tenant_id = 't_a'")
    token = json.loads(pseudonymise_batch(_batch().slice(0, 1), **fields).column("properties")[0].as_py())["email"]
    ctx = TenantContext.for_tenant("t_a", actor="support@t_a", purpose="dsar")
    assert reveal(ctx, "t_a", token) == "ann@example.com"
