"""Tenant keys: the local keystore encrypts them at rest, a destroyed key stops working at once, and the
HashiCorp Vault backend is chosen by URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shironzi.errors import KeyDestroyedError, NotFoundError
from shironzi.tenancy.keystore import LocalKeystore, get_keystore


def test_local_keystore_encrypts_keys_at_rest_and_is_stable(home: Path) -> None:
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
    assert json.loads(store.path.read_text())["keys"]["t_a"]["destroyed_at"]


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
