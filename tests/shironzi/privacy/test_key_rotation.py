"""Key rotation without downtime: the master key (killed halfway, then resumed), a tenant's data key (its
vaulted PII re-encrypted, the old key destroyed, the tokens stable), the lease it waits for, and Vault."""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography.fernet import InvalidToken

from shironzi.audit.log import read_audit_events
from shironzi.cli import main
from shironzi.errors import ConfigurationError, KeyDestroyedError
from shironzi.lake.delta import delete, read_arrow, table_version
from shironzi.lake.leases import table_lease
from shironzi.privacy import key_rotation
from shironzi.privacy.key_rotation import rotate_master, rotate_tenant
from shironzi.privacy.pii_table import pii_table_uri, reveal
from shironzi.settings import get_settings
from shironzi.tenancy import reset_registries
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.keystore import LocalKeystore, fernet_for, get_keystore
from tests.ingestion._fixtures import provision
from tests.shironzi.privacy._fixtures import land_pii, rotation_cli
from tests.shironzi.tenancy._vault import TOKEN, vault_server

OLD, NEW = "old-master-key-of-the-test", "new-master-key-of-the-test"
ADMIN = TenantContext.admin(actor="ops@test", purpose="key rotation test")


def _use_masters(monkeypatch: pytest.MonkeyPatch, master: str, previous: str | None = None) -> None:
    monkeypatch.setenv("SHIRONZI_MASTER_KEY", master)
    if previous is None:
        monkeypatch.delenv("SHIRONZI_PREVIOUS_MASTER_KEY", raising=False)
    else:
        monkeypatch.setenv("SHIRONZI_PREVIOUS_MASTER_KEY", previous)
    get_settings.cache_clear()


def _keystore_dir() -> Path:
    return get_settings().home / "keystore"


def _audited(action: str) -> list[dict[str, object]]:
    return read_audit_events(filters=[("action", "=", action)]).to_pylist()


def _data_key_rows(store: object) -> list[tuple[int, bool]]:
    """(version, still wrapped?) of every data key row of the local keystore."""
    assert isinstance(store, LocalKeystore)
    with sqlite3.connect(store.path) as db:
        return [(v, w is not None) for v, w in db.execute(
            "SELECT version, wrapped FROM tenant_data_keys ORDER BY version")]


def _run_cli(*args: str) -> tuple[int, str]:
    """`shironzi ...` in this process; (exit code, stderr) — the error line is what users see."""
    import contextlib
    import io

    err = io.StringIO()
    main.err_console.file = err
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            main.run(list(args))
        return 0, err.getvalue()
    except SystemExit as exc:
        return int(exc.code or 0), err.getvalue()
    finally:
        main.err_console.file = None  # type: ignore[assignment]


def test_a_master_rotation_killed_halfway_leaves_every_key_readable_and_a_rerun_finishes(
    pii_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_masters(monkeypatch, OLD)
    store = get_keystore()
    tenant_keys = {f"t_{i:03d}": store.get_or_create_key(f"t_{i:03d}") for i in range(50)}
    assert isinstance(store, LocalKeystore)
    for tenant in ("t_000", "t_001"):
        store.add_data_key(tenant)
    data_keys = {t: store.data_keys(t) for t in ("t_000", "t_001")}

    # Every process now knows the new master and the retiring one; the rotation dies after 20 of 52 keys.
    _use_masters(monkeypatch, NEW, previous=OLD)
    killed = subprocess.run([*rotation_cli(kill_at="master_batch", after=20), "keys", "rotate-master",
                             "--batch-size", "10"], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    both = LocalKeystore(_keystore_dir(), master_key=NEW, previous_master_keys=[OLD])
    assert both.generation_counts() == {0: 32, 1: 20}  # half-way: two generations side by side
    assert {t: both.get_key(t) for t in tenant_keys} == tenant_keys  # and every key reads
    assert {t: both.data_keys(t) for t in data_keys} == data_keys
    assert _audited("master_key_rotation") == []  # the killed run finished nothing

    finished = subprocess.run([*rotation_cli(), "keys", "rotate-master", "--batch-size", "10"],
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "re-wrapped 32 key(s) under master generation 1" in finished.stdout
    assert '"stage": "keys.rotate_master"' in finished.stderr  # its one structured summary line

    only_new = LocalKeystore(_keystore_dir(), master_key=NEW)  # the retiring master can now be dropped
    assert only_new.generation_counts() == {1: 52}
    assert {t: only_new.get_key(t) for t in tenant_keys} == tenant_keys
    assert {t: only_new.data_keys(t) for t in data_keys} == data_keys
    with pytest.raises(ConfigurationError, match="no configured master opens"):
        LocalKeystore(_keystore_dir(), master_key=OLD).get_key("t_000")
    with pytest.raises(ConfigurationError, match="opens no key generation"):  # nor can it wrap new keys
        LocalKeystore(_keystore_dir(), master_key=OLD).get_or_create_key("t_new")
    [event] = _audited("master_key_rotation")
    assert json.loads(str(event["details"])) == {"generation": 1, "rewrapped": 32, "retired_generations": [0]}


def test_reads_and_new_keys_go_on_during_a_master_rotation(pii_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shironzi.tenancy.keystore import platform_key

    _use_masters(monkeypatch, OLD)
    keys = {f"t_{i}": get_keystore().get_or_create_key(f"t_{i}") for i in range(5)}
    signing = platform_key("audit-digest-signing")  # the audit digests' signing seed is re-wrapped with them
    _use_masters(monkeypatch, NEW, previous=OLD)
    seen: dict[str, bytes] = {}

    def mid_rotation(point: str, done: int) -> None:
        if done == 2:  # another process with both masters reads every key; a laggard on the old master adds one
            reader = LocalKeystore(_keystore_dir(), master_key=NEW, previous_master_keys=[OLD])
            seen.update({t: reader.get_key(t) for t in keys})
            seen["t_late"] = LocalKeystore(_keystore_dir(), master_key=OLD).get_or_create_key("t_late")

    monkeypatch.setattr(key_rotation, "rotation_hook", mid_rotation)
    result = rotate_master(ADMIN, batch_size=2)
    assert {t: seen[t] for t in keys} == keys
    assert result.rewrapped == 7  # the key added meanwhile under the old master was re-wrapped too
    after = LocalKeystore(_keystore_dir(), master_key=NEW)
    assert after.get_key("t_late") == seen["t_late"] and after.generation_counts() == {1: 7}
    assert after.get_key("platform:audit-digest-signing") == signing


def test_rotate_master_takes_the_new_key_from_a_named_variable_and_refuses_bad_input(
    pii_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_masters(monkeypatch, OLD)
    key = get_keystore().get_or_create_key("t_a")
    before = LocalKeystore(_keystore_dir(), master_key=OLD).generation_counts()
    code, err = _run_cli("keys", "rotate-master", "--new-master-key-env", "ROTATION_TEST_UNSET")
    assert code == 1 and err.count("\n") == 1 and "ROTATION_TEST_UNSET is not set" in err
    monkeypatch.setenv("ROTATION_TEST_SAME", OLD)
    code, err = _run_cli("keys", "rotate-master", "--new-master-key-env", "ROTATION_TEST_SAME")
    assert code == 1 and "holds the current master key" in err
    _use_masters(monkeypatch, NEW)  # the new master alone: the old keys cannot be re-wrapped
    code, err = _run_cli("keys", "rotate-master")
    assert code == 1 and "set SHIRONZI_PREVIOUS_MASTER_KEY" in err and "nothing was changed" in err
    _use_masters(monkeypatch, OLD)
    assert LocalKeystore(_keystore_dir(), master_key=OLD).generation_counts() == before  # nothing changed
    assert LocalKeystore(_keystore_dir(), master_key=OLD).get_key("t_a") == key

    monkeypatch.setenv("ROTATION_TEST_NEW", NEW)
    code, err = _run_cli("keys", "rotate-master", "--new-master-key-env", "ROTATION_TEST_NEW")
    assert code == 0, err
    assert LocalKeystore(_keystore_dir(), master_key=NEW).get_key("t_a") == key


def test_rotate_tenant_reencrypts_its_pii_under_a_new_key_destroys_the_old_and_keeps_tokens(pii_home: Path) -> None:
    store = get_keystore()
    tokens = land_pii([("t_a", "c_1", "ann@example.com", "Ann"), ("t_a", "c_2", "bob@example.com", "Bob"),
                       ("t_b", "c_1", "ann@example.com", "Ann B")])
    uri = pii_table_uri()
    token_key = store.get_key("t_a")
    old = read_arrow(uri, filters=[("tenant_id", "=", "t_a")]).column("ciphertext").to_pylist()
    other_before = read_arrow(uri, filters=[("tenant_id", "=", "t_b")]).column("ciphertext").to_pylist()

    first = rotate_tenant(ADMIN, "t_a")
    assert (first.version, first.retired_versions, first.rows, first.resumed) == (1, [0], 4, False)
    assert first.files_removed >= 1
    rows = read_arrow(uri, filters=[("tenant_id", "=", "t_a")]).column("ciphertext").to_pylist()
    new_key = dict(store.data_keys("t_a"))[1]
    assert list(store.data_keys("t_a")) == [(1, new_key)] and new_key != token_key
    assert all(fernet_for(new_key).decrypt(c) for c in rows)
    with pytest.raises(InvalidToken):
        fernet_for(token_key).decrypt(rows[0])  # the old key no longer opens the vaulted PII
    on_disk = b"".join(p.read_bytes() for p in Path(uri).rglob("*.parquet"))
    assert not any(c in on_disk for c in old)  # the files that held the old ciphertext are gone
    assert read_arrow(uri, filters=[("tenant_id", "=", "t_b")]).column("ciphertext").to_pylist() == other_before

    ctx = TenantContext.for_tenant("t_a", actor="support@t_a", purpose="dsar")
    assert reveal(ctx, "t_a", tokens[0]) == "ann@example.com" and reveal(ctx, "t_a", tokens[1]) == "bob@example.com"
    assert land_pii([("t_a", "c_1", "ann@example.com", "Ann")]) == tokens[:1]  # pseudonyms are stable
    [carol] = land_pii([("t_a", "c_3", "carol@example.com", "Carol")])  # new rows: under the new key
    assert reveal(ctx, "t_a", carol) == "carol@example.com"

    second = rotate_tenant(ADMIN, "t_a")
    assert (second.version, second.retired_versions, second.rows) == (2, [1], 6)
    assert _data_key_rows(store) == [(0, False), (1, False), (2, True)]  # version 1 destroyed outright
    assert reveal(ctx, "t_a", carol) == "carol@example.com"
    assert [json.loads(str(e["details"]))["version"] for e in _audited("tenant_key_rotation")] == [1, 2]

    store.destroy_key("t_a")  # crypto-shredding takes the data keys with the tenant key
    with pytest.raises(KeyDestroyedError):
        reveal(ctx, "t_a", tokens[0])


def test_a_tenant_rotation_interrupted_before_destroying_the_old_key_resumes(
    pii_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = land_pii([("t_a", "c_1", "ann@example.com", "Ann"), ("t_a", "c_2", "bob@example.com", "Bob")])
    delete(pii_table_uri(), "customer_id = 'c_2'")  # an erasure rewrote the files (they read back as string views)

    def crash(point: str, rows: int) -> None:
        if point == "tenant_rewritten":
            raise RuntimeError("crash after the commit")

    monkeypatch.setattr(key_rotation, "rotation_hook", crash)
    with pytest.raises(RuntimeError):
        rotate_tenant(ADMIN, "t_a")
    assert [v for v, _ in get_keystore().data_keys("t_a")] == [1, 0]  # both live: every row reads
    ctx = TenantContext.for_tenant("t_a", actor="support@t_a", purpose="dsar")
    assert reveal(ctx, "t_a", tokens[0]) == "ann@example.com"
    monkeypatch.setattr(key_rotation, "rotation_hook", None)
    resumed = rotate_tenant(ADMIN, "t_a")
    assert (resumed.version, resumed.resumed, resumed.retired_versions) == (1, True, [0])
    assert reveal(ctx, "t_a", tokens[0]) == "ann@example.com"


@pytest.mark.parametrize("registry", ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def test_a_rotation_waits_for_an_erasure_lease_then_times_out_clearly_with_nothing_changed(
    pii_home: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, registry: str
) -> None:
    """The leases live in the registry database: flock files with SQLite, advisory locks with PostgreSQL."""
    if registry == "postgres":
        monkeypatch.setenv("SHIRONZI_DATABASE_URL", request.getfixturevalue("pg_database_url"))
        get_settings.cache_clear()
        reset_registries()
        request.addfinalizer(reset_registries)
    [tenant] = provision([("rot-shop", "ecommerce", "standard")])
    tokens = land_pii([(tenant.id, "c_1", "ann@example.com", "Ann")])
    uri = pii_table_uri()
    version = table_version(uri)
    monkeypatch.setenv("SHIRONZI_LEASE_TIMEOUT_SECONDS", "1")
    get_settings.cache_clear()
    holding, release = threading.Event(), threading.Event()

    def erasure() -> None:  # holds the PII table's exclusive lease, as `erase_subject` does while deleting
        with table_lease(uri, mode="exclusive"):
            holding.set()
            release.wait(30)

    eraser = threading.Thread(target=erasure)
    eraser.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        code, err = _run_cli("keys", "rotate-tenant", "rot-shop")
        waited = time.monotonic() - started
    finally:
        release.set()
        eraser.join()
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("error: lease_busy: the key rotation of tenant") and "nothing was changed" in err
    assert waited >= 1.0
    assert [v for v, _ in get_keystore().data_keys(tenant.id)] == [0]  # no new key, no rewrite, no event
    assert table_version(uri) == version and _audited("tenant_key_rotation") == []

    # An erasure that finishes within the timeout is waited for, then the rotation runs.
    monkeypatch.setenv("SHIRONZI_LEASE_TIMEOUT_SECONDS", "20")
    get_settings.cache_clear()
    holding.clear()
    release.clear()
    eraser = threading.Thread(target=erasure)
    eraser.start()
    assert holding.wait(10)
    threading.Timer(0.5, release.set).start()
    code, err = _run_cli("keys", "rotate-tenant", "rot-shop")
    eraser.join()
    assert code == 0, err
    assert [v for v, _ in get_keystore().data_keys(tenant.id)] == [1]
    ctx = TenantContext.for_tenant(tenant.id, actor="support", purpose="dsar")
    assert reveal(ctx, tenant.id, tokens[0]) == "ann@example.com"


def test_tenant_rotation_against_vault_over_http_makes_the_exact_kv_v2_requests(
    pii_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with vault_server("kv") as (url, kv):
        monkeypatch.setenv("VAULT_TOKEN", TOKEN)
        monkeypatch.setenv("SHIRONZI_SECRETS_URL", f"vault+{url}/kv")
        get_settings.cache_clear()
        tokens = land_pii([("t_a", "c_1", "ann@example.com", "Ann")])
        token_key = get_keystore().get_key("t_a")
        kv.requests.clear()

        first = rotate_tenant(ADMIN, "t_a")
        assert (first.version, first.retired_versions) == (1, [0])
        calls = [(r.method, r.path) for r in kv.requests]
        data_path = "/v1/kv/data/shironzi/tenant-data-keys/t_a"
        assert ("GET", data_path) in calls and ("POST", "/v1/kv/destroy/shironzi/tenant-data-keys/t_a") in calls
        writes = [r.body for r in kv.requests if r.method == "POST" and r.path == data_path]
        assert [w["options"] for w in writes] == [{"cas": 0}, {"cas": 1}]  # check-and-set on every write
        assert writes[0]["data"]["token_key_retired"] is False and set(writes[0]["data"]["keys"]) == {"1"}
        assert writes[1]["data"] == {"keys": writes[0]["data"]["keys"], "token_key_retired": True}
        [destroy] = [r.body for r in kv.requests if r.path.startswith("/v1/kv/destroy/")]
        assert destroy == {"versions": [1]}  # the KV version that still listed the retired key is destroyed
        new_key = base64.b64decode(writes[0]["data"]["keys"]["1"])
        rows = read_arrow(pii_table_uri(), filters=[("tenant_id", "=", "t_a")]).column("ciphertext").to_pylist()
        assert fernet_for(new_key).decrypt(rows[0]) and new_key != token_key

        kv.requests.clear()
        second = rotate_tenant(ADMIN, "t_a")
        assert (second.version, second.retired_versions) == (2, [1])
        [destroy] = [r.body for r in kv.requests if r.path.startswith("/v1/kv/destroy/")]
        assert destroy == {"versions": [1, 2, 3]}
        held = [v for v in kv.live_values() if "keys" in v]
        assert held == [{"keys": {"2": held[0]["keys"]["2"]}, "token_key_retired": True}]  # v1 is gone from Vault
        ctx = TenantContext.for_tenant("t_a", actor="support@t_a", purpose="dsar")
        assert reveal(ctx, "t_a", tokens[0]) == "ann@example.com"

        with pytest.raises(ConfigurationError, match="vault operator rotate"):
            rotate_master(ADMIN)
        kv.requests.clear()
        get_keystore().destroy_key("t_a")
        assert [(r.method, r.path) for r in kv.requests][:2] == [
            ("DELETE", "/v1/kv/metadata/shironzi/tenant-keys/t_a"),
            ("DELETE", "/v1/kv/metadata/shironzi/tenant-data-keys/t_a"),
        ]
        with pytest.raises(KeyDestroyedError):
            reveal(ctx, "t_a", tokens[0])
