"""API keys: `shz_<prefix>_<secret>`, shown once, stored only as a salted HMAC-SHA256 of the secret.

Keys carry ~190 bits of randomness, so a fast keyed hash is the right tool (a slow password hash would
only make verification expensive); the per-key salt keeps equal hashes from ever lining up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shironzi.errors import MalformedKeyError

KEY_PREFIX = "shz"
PREFIX_LENGTH = 10
SECRET_LENGTH = 32
_KEY = re.compile(r"^shz_([a-z2-7]{10})_([A-Za-z0-9-]{32})$")
_URLSAFE_NO_UNDERSCORE = bytes.maketrans(b"_", b"-")


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    """Who a verified key speaks for."""

    key_prefix: str
    tenant_id: str | None
    scopes: tuple[str, ...]
    is_admin: bool
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key as listed (never its secret or hash)."""

    prefix: str
    tenant_id: str | None
    scopes: tuple[str, ...]
    label: str | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A freshly generated key: the plaintext (shown once) and what gets stored."""

    prefix: str
    plaintext: str
    key_hash: str
    salt: str


class _RandomBytes:
    """os.urandom drawn in 64 KiB blocks: one syscall per ~900 keys instead of four per key.

    Bytes are never handed out twice, and a forked child drops the parent's buffer.
    """

    BLOCK = 65536

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._buffer, self._offset = b"", 0

    def __call__(self, n: int) -> bytes:
        with self._lock:
            if self._offset + n > len(self._buffer):
                self._buffer, self._offset = os.urandom(max(self.BLOCK, n)), 0
            start = self._offset
            self._offset += n
            return self._buffer[start : start + n]


random_bytes = _RandomBytes()


def new_prefix() -> str:
    """10 lowercase base32 characters (50 bits): the public lookup handle of a key."""
    return base64.b32encode(random_bytes(7)).decode("ascii").lower()[:PREFIX_LENGTH]


def new_secret() -> str:
    """32 url-safe characters without underscores (underscore separates the key's parts)."""
    return base64.urlsafe_b64encode(random_bytes(24)).translate(_URLSAFE_NO_UNDERSCORE).decode("ascii")


def hash_secret(prefix: str, secret: str, salt: bytes) -> str:
    """HMAC-SHA256 of `prefix_secret` keyed by the per-key salt, hex encoded."""
    return hmac.new(salt, f"{prefix}_{secret}".encode("ascii"), hashlib.sha256).hexdigest()


def generate_key(prefix: str | None = None) -> GeneratedKey:
    prefix = prefix or new_prefix()
    secret = new_secret()
    salt = random_bytes(16)
    return GeneratedKey(
        prefix=prefix,
        plaintext=f"{KEY_PREFIX}_{prefix}_{secret}",
        key_hash=hash_secret(prefix, secret, salt),
        salt=salt.hex(),
    )


def parse_key(raw: object) -> tuple[str, str]:
    """Split a presented key into (prefix, secret), or raise MalformedKeyError (never echoing the secret)."""
    if not isinstance(raw, str):
        raise MalformedKeyError("malformed API key: expected a string like shz_<prefix>_<secret>")
    match = _KEY.match(raw.strip())
    if not match:
        shown = raw[:8] + "..." if len(raw) > 8 else raw
        raise MalformedKeyError(f"malformed API key {shown!r}: expected shz_<10 chars>_<32 chars>")
    return match.group(1), match.group(2)


def secret_matches(prefix: str, secret: str, *, key_hash: str, salt: str) -> bool:
    return hmac.compare_digest(hash_secret(prefix, secret, bytes.fromhex(salt)), key_hash)


def cache_key(raw: str) -> bytes:
    """What the verification cache is keyed by: a SHA-256 of the full key, so it never holds plaintext."""
    return hashlib.sha256(raw.strip().encode("utf-8")).digest()


Outcome = Literal["ok", "invalid", "revoked"]


@dataclass(frozen=True, slots=True)
class CachedCheck:
    """The result of one database check of a key, reused until `valid_until` (monotonic seconds)."""

    valid_until: float
    outcome: Outcome
    prefix: str
    principal: KeyPrincipal | None
    tenant_status: str | None


class KeyCheckCache:
    """In-process TTL cache of key checks keyed by each key's SHA-256; dropped locally on change.

    Bounded by `max_entries` with least-recently-used eviction: a full cache drops only its coldest
    entries, one per new entry, never the hot keys of busy tenants."""

    def __init__(self, ttl_seconds: float, *, max_entries: int = 100_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, CachedCheck] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> CachedCheck | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.valid_until < time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry

    def put(
        self,
        key: bytes,
        *,
        outcome: Outcome,
        prefix: str,
        principal: KeyPrincipal | None,
        tenant_status: str | None,
    ) -> None:
        if self.ttl_seconds <= 0 or self.max_entries <= 0:
            return
        entry = CachedCheck(time.monotonic() + self.ttl_seconds, outcome, prefix, principal, tenant_status)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget_prefix(self, prefix: str) -> None:
        with self._lock:
            for key in [k for k, e in self._entries.items() if e.prefix == prefix]:
                del self._entries[key]

    def forget_tenant(self, tenant_id: str) -> None:
        with self._lock:
            for key in [
                k for k, e in self._entries.items() if e.principal and e.principal.tenant_id == tenant_id
            ]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
