"""Webhook signatures in Stripe's style: `Shironzi-Signature: t=1733476800,v1=<hex>[,v1=<hex>]`.

The signed text is `"{t}.{body}"` and the MAC is HMAC-SHA256 under the receiver's secret. A tenant's secret
is derived (never stored): HMAC-SHA256 of the platform key over `webhook:{tenant_id}:{generation}`, where the
generation is the number of `webhook_secret_rotated` events of the tenant. For `ROTATION_GRACE_SECONDS` after
a rotation the header carries a second `v1=` under the previous secret, so receivers can switch over without
dropping a delivery. Receivers check with `verify_signature` (or its few lines in any language).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

from shironzi.errors import IntegrityCheckError
from shironzi.settings import Settings

SIGNATURE_HEADER = "Shironzi-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "Shironzi-Event"
DELIVERY_HEADER = "Shironzi-Delivery"
PLATFORM_RECEIVER = "_platform"  # the secret of the platform's own receivers (alert webhooks)
ROTATION_GRACE_SECONDS = 24 * 3600
DEFAULT_TOLERANCE_SECONDS = 300


def webhook_secret(settings: Settings, tenant_id: str, generation: int) -> str:
    """A tenant's signing secret of one generation (`whsec_` + 64 hex)."""
    key = settings.platform_key.get_secret_value().encode()
    mac = hmac.new(key, f"webhook:{tenant_id}:{generation}".encode(), hashlib.sha256).hexdigest()
    return f"whsec_{mac}"


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secrets: Sequence[str], body: bytes, *, timestamp: int | None = None) -> str:
    """The header value signing `body` at `timestamp` (now) with each secret (newest first)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={stamp}", *(f"v1={_mac(secret, stamp, body)}" for secret in secrets)])


def verify_signature(header: str, body: bytes, secret: str, *, tolerance: float = DEFAULT_TOLERANCE_SECONDS,
                     now: float | None = None) -> int:
    """Check a received signature header; returns its timestamp. Refuses a stale timestamp (a replay) or a
    body that no `v1` matches."""
    stamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            stamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if stamp is None or not candidates:
        raise IntegrityCheckError("malformed webhook signature header")
    if abs((time.time() if now is None else now) - stamp) > tolerance:
        raise IntegrityCheckError("webhook signature timestamp outside the tolerance (a replay?)")
    expected = _mac(secret, stamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise IntegrityCheckError("webhook signature does not match the body")
    return stamp
