"""PII tokens: the stable keyed hash (HMAC-SHA256 under the tenant's key) that stands for a PII value."""

from __future__ import annotations

import hashlib
import hmac
import re

from shironzi.errors import KeyDestroyedError, NotFoundError
from shironzi.tenancy.keystore import TenantKeystore, get_keystore

TOKEN_PREFIX = "tok_"
TOKEN_PATTERN = re.compile(r"^tok_[0-9a-f]{32}$")


def pseudonym(key: bytes, value: str) -> str:
    """The stable keyed hash that stands for a PII value: `tok_` + 128 bits of HMAC-SHA256."""
    return TOKEN_PREFIX + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


def subject_pseudonym(
    tenant_id: str, subject_id: str, *, keystore: TenantKeystore | None = None
) -> str | None:
    """The pseudonymised form of a subject id under the tenant's key (None when the key is gone/absent)."""
    store = keystore or get_keystore()
    try:
        return pseudonym(store.get_key(tenant_id), subject_id)
    except (NotFoundError, KeyDestroyedError):
        return None
