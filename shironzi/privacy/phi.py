"""PHI protection: deterministic encryption (AES-SIV) of protected health information under a per-tenant key.

Healthcare contracts mark PHI (the patient's `customer_id`, clinical codes such as `specialty` and
`procedure_code`). Landing replaces each PHI value by `phi_` + the URL-safe base64 of its AES-SIV
ciphertext under the tenant's PHI key, derived (HKDF-SHA256) from the tenant key in the keystore:

- deterministic: one value gives one ciphertext per tenant, so joins, group-bys and counts downstream (dbt,
  features, training, scoring) are what they were on clear values, and the API finds a customer by
  encrypting the clear id it was sent (a direct lookup, no table read);
- reversible only for holders of the tenant key (`reveal_phi`, behind the `phi:read` scope);
- crypto-shredded with the tenant key: once the key is destroyed no copy anywhere (lake, online store,
  MLflow artifacts, logs) can be decrypted again.

The tenant id is the associated data, so a value copied into another tenant's rows does not decrypt there.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shironzi.errors import KeyDestroyedError, NotFoundError
from shironzi.intake import event_intake
from shironzi.tenancy.keystore import TenantKeystore, get_keystore

PHI_PREFIX = "phi_"
PHI_PATTERN = re.compile(r"^phi_[A-Za-z0-9_-]{22,}$")
_INFO = b"shironzi phi aes-siv v1"
_MEMO_MAX = 200_000


def phi_key(tenant_key: bytes) -> bytes:
    """The tenant's 512-bit AES-SIV key, derived from its tenant key (so it dies with it)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_INFO).derive(tenant_key)


def is_protected(value: object) -> bool:
    return isinstance(value, str) and PHI_PATTERN.match(value) is not None


class PhiCipher:
    """Deterministic encryption of one tenant's PHI values (a cipher per tenant, built from its key)."""

    def __init__(self, tenant_id: str, tenant_key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESSIV

        self.tenant_id = tenant_id
        self._siv = AESSIV(phi_key(tenant_key))
        self._data = [tenant_id.encode()]
        self._memo: dict[str, str] = {}  # value -> protected: a landing batch repeats few distinct values

    @classmethod
    def of(cls, tenant_id: str, *, keystore: TenantKeystore | None = None, create: bool = False) -> PhiCipher:
        """The tenant's cipher; KeyDestroyedError once its key is destroyed (NotFoundError: never had one)."""
        store = keystore or get_keystore()
        key = store.get_or_create_key(tenant_id) if create else store.get_key(tenant_id)
        return cls(tenant_id, key)

    @classmethod
    def of_many(cls, tenant_ids: Iterable[str], *, keystore: TenantKeystore | None = None) -> dict[str, PhiCipher]:
        """`of(t, create=True)` for many tenants with one keystore call: their keys read, and the new tenants'
        keys created in one commit, not one commit per new tenant (a batch over thousands of new clinics)."""
        wanted = sorted(set(tenant_ids))
        if not wanted:
            return {}
        keys = (keystore or get_keystore()).get_or_create_keys(wanted)
        return {t: cls(t, keys[t]) for t in wanted}

    def protect(self, value: str) -> str:
        """The `phi_...` form of a clear value; values already protected stay as they are."""
        found = self._memo.get(value)
        if found is not None:
            return found
        if is_protected(value):
            return value
        sealed = self._siv.encrypt(value.encode(), self._data)
        found = PHI_PREFIX + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()
        if len(self._memo) < _MEMO_MAX:
            self._memo[value] = found
        return found

    def reveal(self, value: str) -> str:
        """The clear value of a `phi_...` text; other text is returned as it is (it was never PHI)."""
        from cryptography.exceptions import InvalidTag

        if not is_protected(value):
            return value
        body = value.removeprefix(PHI_PREFIX)
        try:
            sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return self._siv.decrypt(sealed, self._data).decode()
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise KeyDestroyedError(
                f"a PHI value of tenant {self.tenant_id!r} does not decrypt under its current key"
            ) from exc


def protect_values(
    values: Iterable[str | None], tenants: Iterable[str], ciphers: Mapping[str, PhiCipher]
) -> list[str | None]:
    """Protect a column of values row by row (`tenants` says whose key; other tenants' values stay)."""
    return [
        value if value is None or tenant not in ciphers else ciphers[tenant].protect(value)
        for value, tenant in zip(values, tenants, strict=True)
    ]


def protect_document(doc: dict[str, Any], fields: Iterable[str], cipher: PhiCipher) -> bool:
    """Protect the string values of `fields` in a parsed properties document in place; True when one changed."""
    changed = False
    for name in fields:
        value = doc.get(name)
        if isinstance(value, str) and not is_protected(value):
            doc[name] = cipher.protect(value)
            changed = True
    return changed


def subject_phi(tenant_id: str, subject_id: str, *, keystore: TenantKeystore | None = None) -> str | None:
    """The PHI-protected form of a subject id under the tenant's key (None when the key is gone/absent): what
    the tables of a tenant whose contract makes `customer_id` PHI hold for that subject."""
    try:
        return PhiCipher.of(tenant_id, keystore=keystore).protect(subject_id)
    except (NotFoundError, KeyDestroyedError):
        return None


@functools.cache
def customer_id_is_phi(industry: str) -> bool:
    """Whether the industry's contract makes the customer id PHI, asked through the kernel's intake seam (the
    contracts live in `ingestion/`, which the kernel, `models/` and `serving/` do not import)."""
    return "customer_id" in event_intake().phi_columns(industry)


def stored_customer_ids(
    tenant_ids: Sequence[str],
    customer_ids: Sequence[str | None],
    *,
    industries: Mapping[str, str],
    keystore: TenantKeystore | None = None,
) -> list[str | None]:
    """Clear customer ids (one per row, with its tenant) as the tables hold them: PHI-protected for tenants
    whose contract makes the customer id PHI (`industries`: tenant -> industry), the others unchanged. For
    code that joins outside ids (the simulator's ground truth, an app's request) to the lake."""
    ciphers = PhiCipher.of_many((t for t in set(tenant_ids) if t in industries and customer_id_is_phi(industries[t])),
                                keystore=keystore)
    return protect_values(customer_ids, tenant_ids, ciphers)
