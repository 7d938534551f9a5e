"""Platform keys (the audit digest signing key): held by the secrets backend beside the tenant keys, never in the
lake. The local keystore keeps one as a reserved, wrapped row; Vault at its own KV v2 path, exercised here against a
real HTTP server that speaks the KV v2 subset hvac uses (no Vault server can run on this machine)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shironzi.errors import InvalidInputError, NotFoundError
from shironzi.settings import get_settings
from shironzi.tenancy.keystore import LocalKeystore, platform_key
from tests.shironzi.tenancy._vault import TOKEN, FakeKv, vault_server


def test_local_platform_key_is_a_wrapped_reserved_row_and_never_created_by_a_lookup(home: Path) -> None:
    with pytest.raises(NotFoundError, match="no platform key 'audit-digest-signing'"):
        platform_key("audit-digest-signing", create=False)
    key = platform_key("audit-digest-signing")
    assert len(key) == 32 and platform_key("audit-digest-signing", create=False) == key
    store = LocalKeystore(home / "keystore", master_key=get_settings().master_key.get_secret_value())
    assert store.get_key("platform:audit-digest-signing") == key  # wrapped under the master key like tenant keys
    assert key not in (home / "keystore" / "tenant_keys.db").read_bytes()
    with pytest.raises(InvalidInputError):
        platform_key("../tenant-keys/t_a")


@pytest.fixture
def vault(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKv]:
    with vault_server("kv") as (url, kv):
        monkeypatch.setenv("SHIRONZI_SECRETS_URL", f"vault+{url}/kv")
        monkeypatch.setenv("VAULT_TOKEN", TOKEN)
        get_settings.cache_clear()
        yield kv


def test_vault_platform_key_lives_at_its_own_kv_path(vault: FakeKv) -> None:
    with pytest.raises(NotFoundError, match="shironzi/platform-keys/audit-digest-signing"):
        platform_key("audit-digest-signing", create=False)
    key = platform_key("audit-digest-signing")
    assert len(key) == 32 and platform_key("audit-digest-signing", create=False) == key
    path = "/v1/kv/data/shironzi/platform-keys/audit-digest-signing"
    assert set(vault.secrets) == {"shironzi/platform-keys/audit-digest-signing"}
    assert any(r.method in ("POST", "PUT") and r.path == path for r in vault.requests)
    assert not any("tenant-keys" in r.path for r in vault.requests)
    # A lost check-and-set race: our create is refused (cas=0) and the winner's key is handed out.
    vault.hidden_once.add("shironzi/platform-keys/audit-digest-signing")
    writes = sum(1 for r in vault.requests if r.method != "GET")
    assert platform_key("audit-digest-signing") == key
    assert sum(1 for r in vault.requests if r.method != "GET") == writes + 1
    assert len(vault.secrets["shironzi/platform-keys/audit-digest-signing"]) == 1  # the refused write wrote nothing
