"""Tenant keys: the local keystore encrypts them at rest, a destroyed key stops working at once, and the
HashiCorp Vault backend is chosen by URL."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from shironzi.errors import KeyDestroyedError, NotFoundError
from shironzi.tenancy.keystore import LocalKeystore, get_keystore


def test_local_keystore_encrypts_keys_at_rest_and_is_stable(home: Path) -> None:
    store = get_keystore()
    assert isinstance(store, LocalKeystore)
    key = store.get_or_create_key("t_a")
    assert len(key) == 32 and store.get_or_create_key("t_a") == key
    assert store.get_or_create_key("t_b") != key
    stored = b"".join(p.read_bytes() for p in store.directory.glob("tenant_keys.db*"))  # with the write-ahead log
    assert key not in stored and key.hex().encode() not in stored and b"gAAAAA" in stored  # Fernet tokens
    wrong = LocalKeystore(store.directory, master_key="another-master-key")
    with pytest.raises(Exception, match="SHIRONZI_MASTER_KEY"):
        wrong.get_key("t_a")
    with pytest.raises(NotFoundError):
        store.get_key("t_unknown")


def test_keys_of_many_new_tenants_are_created_in_one_commit(home: Path) -> None:
    store = get_keystore()
    assert isinstance(store, LocalKeystore)
    existing = store.get_or_create_key("t_0")
    statements: list[str] = []
    store._connect().set_trace_callback(statements.append)
    wanted = [f"t_{i}" for i in range(2000)] + ["t_5"]  # a repeated tenant is one key
    keys = store.get_or_create_keys(wanted)
    store._connect().set_trace_callback(None)
    assert [s for s in statements if s.startswith(("BEGIN", "COMMIT"))] == ["BEGIN IMMEDIATE", "COMMIT"]
    assert sum(s.startswith("INSERT") for s in statements) == 1999  # one executemany: the 1,999 missing ones
    # Read by key, 500 tenants per query: 4 queries for the 2,000 asked, 4 for the 1,999 created (not 3,999).
    assert sum(s.startswith("SELECT") and "FROM tenant_keys" in s for s in statements) == 8
    assert list(keys) == wanted[:2000] and keys["t_0"] == existing
    assert all(store.get_key(t) == keys[t] for t in ("t_1", "t_999", "t_1999"))
    assert len(set(keys.values())) == 2000
    assert store.get_or_create_keys(["t_7"]) == {"t_7": keys["t_7"]}
    store.destroy_key("t_1500")
    with pytest.raises(KeyDestroyedError, match="t_1500"):  # a destroyed key in a batch still stops it
        store.get_or_create_keys(["t_3", "t_1500", "t_new"])
    with pytest.raises(NotFoundError):
        store.get_key("t_new")  # nothing was created for the refused batch


def test_newest_data_keys_of_many_tenants_in_a_few_queries_equal_each_tenants_own(home: Path) -> None:
    """A stream batch over tens of thousands of tenants read each one's data keys with its own query and unwrap;
    one batch read gives the same keys (rotated or not), and still refuses a destroyed or unknown tenant."""
    store = get_keystore()
    assert isinstance(store, LocalKeystore)
    keys = store.get_or_create_keys([f"t_{i:04d}" for i in range(1_200)])
    store.add_data_key("t_0003")
    store.add_data_key("t_0003")
    store.add_data_key("t_0700")
    store.retire_data_keys("t_0700", keep=1)
    statements: list[str] = []
    store._connect().set_trace_callback(statements.append)
    newest = store.newest_data_keys(keys)
    store._connect().set_trace_callback(None)
    assert newest == {t: store.data_keys(t)[0][1] for t in keys}
    assert newest["t_0003"] != keys["t_0003"] and newest["t_0001"] == keys["t_0001"]
    assert sum(s.startswith("SELECT") for s in statements) == 6  # two per 500 tenants
    store.destroy_key("t_0001")
    with pytest.raises(KeyDestroyedError):
        store.newest_data_keys({"t_0001": keys["t_0001"]})
    with pytest.raises(NotFoundError):
        store.newest_data_keys({"t_unknown": b"x" * 32})


def test_each_wrapped_key_is_decrypted_once_and_the_memo_is_bounded_and_forgets_destroyed_keys(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream batch reads its tenants' keys again for every batch: the rows are read each time (a destroy is
    seen at once), but a (generation, wrapped) already opened is not decrypted again."""
    from shironzi.tenancy import keystore as ks

    store = get_keystore()
    assert isinstance(store, LocalKeystore)
    tenants = [f"t_{i:04d}" for i in range(1_000)]
    keys = store.get_or_create_keys(tenants)
    store.add_data_key("t_0002")
    rotated = store.newest_data_keys(keys)  # a created key is remembered at once, a data key at its first read
    decrypted: list[str] = []
    real = store._decrypt_wrapped
    monkeypatch.setattr(store, "_decrypt_wrapped", lambda db, w, g, t: decrypted.append(t) or real(db, w, g, t))
    assert store.get_or_create_keys(tenants) == keys and store.newest_data_keys(keys) == rotated
    assert rotated["t_0002"] != keys["t_0002"] and decrypted == []  # every one was opened before
    store.add_data_key("t_0002")  # a new version: a new wrapped text, decrypted once
    newest = store.newest_data_keys({"t_0002": keys["t_0002"]})["t_0002"]
    assert store.newest_data_keys({"t_0002": keys["t_0002"]})["t_0002"] == newest and decrypted == ["t_0002"]
    retired = dict(store.data_keys("t_0002"))
    store.retire_data_keys("t_0002", keep=2)
    assert retired[1] not in store._unwrapped.values() and newest in store._unwrapped.values()
    store.destroy_key("t_0001")
    assert keys["t_0001"] not in store._unwrapped.values() and keys["t_0003"] in store._unwrapped.values()
    with pytest.raises(KeyDestroyedError):
        store.get_key("t_0001")
    monkeypatch.setattr(ks, "UNWRAPPED_MEMO_SIZE", 10)
    fresh = LocalKeystore(store.directory, master_key="dev-master-key-change-me")
    fresh._master_key = store._master_key
    assert fresh.get_or_create_keys(tenants[2:50]) == {t: keys[t] for t in tenants[2:50]}
    assert list(fresh._unwrapped.values()) == [keys[t] for t in tenants[40:50]]  # the 10 most recently used


def test_a_key_created_here_is_handed_out_without_decrypting_it_and_a_lost_race_hands_out_the_winner(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream batch over 94,000 new tenants decrypted each key right after it had wrapped it (4 s of the 100k
    stream slice's profile). A key created here is remembered as it is written; the row is still read back, so a
    concurrent creator's key wins."""
    store = get_keystore()
    assert isinstance(store, LocalKeystore)
    other = LocalKeystore(store.directory, master_key="dev-master-key-change-me")
    other._master_key = store._master_key  # another process's keystore on the same database
    decrypted: list[str] = []
    real = store._decrypt_wrapped
    monkeypatch.setattr(store, "_decrypt_wrapped", lambda db, w, g, t: decrypted.append(t) or real(db, w, g, t))
    tenants = [f"t_{i:03d}" for i in range(50)]
    keys = store.get_or_create_keys(tenants)
    single = store.get_or_create_key("t_single")
    assert decrypted == [] and len(set(keys.values()) | {single}) == 51
    assert other.get_or_create_keys(tenants) == keys and other.get_key("t_single") == single  # what the rows hold

    winner = other.get_or_create_key("t_race")  # committed between this keystore's read and its insert:
    real_unwrap_many = store._unwrap_many
    reads: list[list[str]] = []

    def unwrap_many(db: Any, wanted: list[str]) -> dict[str, bytes]:
        reads.append(list(wanted))  # the first read (before the insert) did not see the winner's row yet
        return {} if len(reads) == 1 else real_unwrap_many(db, wanted)

    monkeypatch.setattr(store, "_unwrap_many", unwrap_many)
    assert store.get_or_create_keys(["t_race"]) == {"t_race": winner}
    assert reads == [["t_race"], ["t_race"]] and decrypted == ["t_race"]  # its own key lost: the row's was opened


def test_a_key_destroyed_by_another_keystore_stops_working_here_at_once(home: Path) -> None:
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
    with sqlite3.connect(store.path) as db:
        row = db.execute("SELECT wrapped, destroyed_at IS NOT NULL FROM tenant_keys WHERE tenant_id = 't_a'")
        assert row.fetchone() == (None, 1)


def _written_bytes() -> int:
    """Bytes this process has handed to write() so far (Linux /proc/self/io `wchar`)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def test_issuing_a_key_costs_the_same_at_300_keys_as_at_10(home: Path) -> None:
    store = get_keystore()

    def cost_of_ten(start: int) -> int:
        before = _written_bytes()
        for i in range(start, start + 10):
            store.get_or_create_key(f"t_{i:05d}")
        return _written_bytes() - before

    early = cost_of_ten(0)
    for i in range(10, 300):
        store.get_or_create_key(f"t_{i:05d}")
    late = cost_of_ten(300)
    # The JSON keystore rewrote every entry per new key: ~30x more bytes at 300 keys than at 10.
    assert late <= early * 1.5 + 16_384, (early, late)


def test_destroyed_key_bytes_are_gone_from_the_database_file(home: Path) -> None:
    store = get_keystore()
    store.get_or_create_key("t_a")
    with sqlite3.connect(store.path) as db:
        wrapped = db.execute("SELECT wrapped FROM tenant_keys WHERE tenant_id = 't_a'").fetchone()[0]
    assert wrapped.encode() in b"".join(p.read_bytes() for p in store.directory.glob("tenant_keys.db*"))
    store.destroy_key("t_a")
    assert wrapped.encode() not in store.path.read_bytes()  # secure_delete zeroed the old row
    for log in store.directory.glob("tenant_keys.db-*"):  # the write-ahead log was emptied
        assert wrapped.encode() not in log.read_bytes()
    with pytest.raises(KeyDestroyedError):
        store.get_key("t_a")


def test_a_json_keystore_is_migrated_on_first_use(home: Path) -> None:
    directory = home / "legacy-keys"
    directory.mkdir()
    master = "dev-master-key-change-me"
    salt = os.urandom(16)
    wrapper = LocalKeystore(directory, master_key=master)._wrapping_key(salt)
    key = os.urandom(32)
    legacy = directory / "tenant_keys.json"
    legacy.write_text(json.dumps({"salt": base64.b64encode(salt).decode(), "keys": {
        "t_live": {"wrapped": wrapper.encrypt(key).decode(), "created_at": "2026-01-01T00:00:00+00:00",
                   "destroyed_at": None},
        "t_gone": {"wrapped": None, "created_at": None, "destroyed_at": "2026-02-01T00:00:00+00:00"},
    }}))
    store = LocalKeystore(directory, master_key=master)
    assert store.get_key("t_live") == key and store.get_or_create_key("t_live") == key
    with pytest.raises(KeyDestroyedError):
        store.get_or_create_key("t_gone")
    assert not legacy.exists()  # zeroed and removed: its copies of keys must not outlive a destroy
    assert LocalKeystore(directory, master_key=master).get_key("t_live") == key  # a second instance agrees


def test_vault_url_selects_vault_and_an_unreachable_vault_is_one_clear_error() -> None:
    """The Vault backend (hvac, KV v2) is chosen by URL, and a Vault that cannot be reached fails readably
    (the round trip is exercised against a local KV v2 server in the next test)."""
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


def test_vault_keystore_speaks_kv_v2_over_http(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hvac path against a local server speaking Vault's KV v2 API: the exact verbs, paths and payloads."""
    from shironzi.errors import ServiceUnavailableError
    from shironzi.tenancy.keystore import VaultKeystore, keystore_for_url
    from tests.shironzi.tenancy._vault import TOKEN, vault_server

    with vault_server("kv") as (url, kv):
        monkeypatch.setenv("VAULT_TOKEN", TOKEN)
        store = keystore_for_url(f"vault+{url}/kv", master_key="unused")
        assert isinstance(store, VaultKeystore)
        key = store.get_or_create_key("t_a")
        assert store.get_or_create_key("t_a") == key and store.get_key("t_a") == key
        path = "/v1/kv/data/shironzi/tenant-keys/t_a"
        assert [(r.method, r.path) for r in kv.requests] == [("GET", path), ("POST", path)] + [("GET", path)] * 2
        created = kv.requests[1].body
        assert created["options"] == {"cas": 0}  # create-only: two creators cannot hand out two keys
        assert base64.b64decode(created["data"]["key"]) == key and set(created["data"]) == {"key", "created_at"}

        kv.requests.clear()
        store.destroy_key("t_a")
        assert [(r.method, r.path) for r in kv.requests] == [
            ("DELETE", "/v1/kv/metadata/shironzi/tenant-keys/t_a"),
            ("DELETE", "/v1/kv/metadata/shironzi/tenant-data-keys/t_a"),
            ("POST", path),
        ]
        assert set(kv.requests[-1].body["data"]) == {"destroyed_at"}
        assert all("key" not in v for v in kv.live_values())  # no version of the key is left in Vault
        with pytest.raises(KeyDestroyedError):
            store.get_key("t_a")

        monkeypatch.setenv("VAULT_TOKEN", "s.wrong")
        refused = keystore_for_url(f"vault+{url}/kv", master_key="unused")
        with pytest.raises(ServiceUnavailableError, match="could not read a tenant key: Forbidden"):
            refused.get_key("t_b")


def test_a_keystore_from_before_master_rotation_is_migrated_and_rotates(home: Path) -> None:
    """An existing keystore (no generations) keeps working, learns its master, and can be rotated."""
    directory = home / "old-keys"
    directory.mkdir()
    salt = os.urandom(16)
    key = os.urandom(32)
    wrapped = LocalKeystore(directory, master_key="old-master")._wrapping_key(salt).encrypt(key).decode()
    with sqlite3.connect(directory / "tenant_keys.db") as db:  # the schema before generations
        db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("CREATE TABLE tenant_keys (tenant_id TEXT PRIMARY KEY, wrapped TEXT, created_at TEXT, "
                   "destroyed_at TEXT)")
        db.execute("INSERT INTO meta VALUES ('salt', ?)", (base64.b64encode(salt).decode(),))
        db.execute("INSERT INTO tenant_keys VALUES ('t_old', ?, '2026-01-01', NULL)", (wrapped,))
    # The first process to open it already has the new master: generation 0 is recognised by the old one.
    rotating = LocalKeystore(directory, master_key="new-master", previous_master_keys=["old-master"])
    assert rotating.get_key("t_old") == key
    assert rotating.generation_counts() == {0: 1}
    generation = rotating.begin_master_rotation()
    assert generation == 1 and rotating.rewrap_batch(generation, limit=10) == 1
    assert rotating.retire_generations(keep=generation) == [0]
    assert LocalKeystore(directory, master_key="new-master").get_key("t_old") == key
    with pytest.raises(Exception, match="no configured master opens"):
        LocalKeystore(directory, master_key="old-master").get_key("t_old")
