"""Platform keys (the audit digest signing key): held by the secrets backend beside the tenant keys, never in the
lake. The local keystore keeps one as a reserved, wrapped row; Vault at its own KV v2 path, exercised here against a
real HTTP server that speaks the KV v2 subset hvac uses (no Vault server can run on this machine)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shironzi.errors import InvalidInputError, NotFoundError
from shironzi.settings import get_settings
from shironzi.tenancy.keystore import LocalKeystore, platform_key


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


class _KvV2(BaseHTTPRequestHandler):
    """The KV v2 read and check-and-set write that hvac sends, over a dict; every request path is recorded."""

    secrets: dict[str, dict[str, Any]] = {}
    requests: list[tuple[str, str]] = []
    hidden_once: set[str] = set()  # answered 404 once: another creator writes between our read and our write

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.requests.append(("GET", self.path))
        path = self.path.split("?")[0]
        secret = None if path in self.hidden_once else self.secrets.get(path)
        self.hidden_once.discard(path)
        if secret is None:
            self._reply(404, {"errors": []})
            return
        metadata = {"version": 1, "deletion_time": "", "destroyed": False, "created_time": "2026-01-01T00:00:00Z"}
        self._reply(200, {"data": {"data": secret, "metadata": metadata}})

    def do_POST(self) -> None:  # noqa: N802
        self.requests.append(("POST", self.path))
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("options", {}).get("cas") == 0 and self.path in self.secrets:
            self._reply(400, {"errors": ["check-and-set parameter did not match the current version"]})
            return
        self.secrets[self.path] = body["data"]
        self._reply(200, {"data": {"version": 1}})

    do_PUT = do_POST  # noqa: N815


@pytest.fixture
def vault(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_KvV2]]:
    _KvV2.secrets, _KvV2.requests, _KvV2.hidden_once = {}, [], set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KvV2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SHIRONZI_SECRETS_URL", f"vault+http://127.0.0.1:{server.server_address[1]}/kv")
    monkeypatch.setenv("VAULT_TOKEN", "test-token")
    get_settings.cache_clear()
    try:
        yield _KvV2
    finally:
        server.shutdown()
        server.server_close()


def test_vault_platform_key_lives_at_its_own_kv_path(vault: type[_KvV2]) -> None:
    with pytest.raises(NotFoundError, match="shironzi/platform-keys/audit-digest-signing"):
        platform_key("audit-digest-signing", create=False)
    key = platform_key("audit-digest-signing")
    assert len(key) == 32 and platform_key("audit-digest-signing", create=False) == key
    path = "/v1/kv/data/shironzi/platform-keys/audit-digest-signing"
    assert set(vault.secrets) == {path}
    assert ("POST", path) in vault.requests or ("PUT", path) in vault.requests
    assert not any("tenant-keys" in p for _, p in vault.requests)
    # A lost check-and-set race: our create is refused (cas=0) and the winner's key is handed out.
    vault.hidden_once.add(path)
    writes = sum(1 for method, _ in vault.requests if method != "GET")
    assert platform_key("audit-digest-signing") == key
    assert sum(1 for method, _ in vault.requests if method != "GET") == writes + 1
