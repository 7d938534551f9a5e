"""The Ed25519 key that signs the audit digests.

The private key is a 32-byte seed held by the secrets backend (`shironzi.tenancy.keystore.platform_key`: the local
keystore or Vault), never in the lake or beside the digests. The public key is published with the digests and
exported by `shironzi audit digest-key --public`, so an auditor can verify offline; every digest names the
fingerprint of the key that signed it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from shironzi.errors import InvalidInputError
from shironzi.tenancy.keystore import platform_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DIGEST_KEY_NAME = "audit-digest-signing"


def signing_key(*, create: bool = True) -> Ed25519PrivateKey:
    """The platform's digest signing key (created on first use unless `create=False`)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(platform_key(DIGEST_KEY_NAME, create=create))


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM (what `openssl pkey -pubin` reads)."""
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: the name digests give their signing key."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_public_key(source: bytes | str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM bytes or a PEM file; a clear error for anything else."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InvalidInputError(f"no public key file at {path}", field="public_key")
        source = path.read_bytes()
    try:
        key = load_pem_public_key(source)
    except ValueError as exc:
        raise InvalidInputError(f"not a PEM public key: {exc}", field="public_key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInputError(
            f"the digest public key must be Ed25519, got {type(key).__name__}", field="public_key"
        )
    return key
