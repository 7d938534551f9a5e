"""Pre-signed GET URLs for objects of an S3-protocol lake (AWS Signature Version 4, query-string form).

The lake's own credentials sign the URL (`SHIRONZI_STORAGE_OPTIONS`); whoever holds the URL may read that one
object until it expires, and nothing else. A custom endpoint (MinIO, moto, R2) is addressed path-style.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from shironzi.errors import ConfigurationError
from shironzi.lake.discovery import _option

_SAFE = "-_.~"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def presigned_url(uri: str, *, storage_options: Mapping[str, str], seconds: int,
                  now: datetime | None = None) -> str:
    """A URL that GETs the object `s3://bucket/key` for `seconds`, signed with the lake's credentials."""
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme not in ("s3", "s3a") or not bucket or not key:
        raise ConfigurationError(f"cannot pre-sign {uri!r}: only s3:// objects are pre-signed")
    access = _option(storage_options, "aws_access_key_id", "access_key_id")
    secret = _option(storage_options, "aws_secret_access_key", "secret_access_key")
    if not access or not secret:
        raise ConfigurationError("cannot pre-sign export URLs: the storage options carry no S3 credentials")
    region = _option(storage_options, "aws_region", "region", "aws_default_region") or "us-east-1"
    token = _option(storage_options, "aws_session_token", "session_token", "aws_token", "token")
    endpoint = _option(storage_options, "aws_endpoint_url", "aws_endpoint", "endpoint_url", "endpoint")
    if endpoint:
        base = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        origin, path = f"{base.scheme}://{base.netloc}", f"{base.path.rstrip('/')}/{bucket}/{key}"
        host = base.netloc
    else:
        host = f"{bucket}.s3.{region}.amazonaws.com"
        origin, path = f"https://{host}", f"/{key}"
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date, day = stamp.strftime("%Y%m%dT%H%M%SZ"), stamp.strftime("%Y%m%d")
    scope = f"{day}/{region}/s3/aws4_request"
    params = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{access}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(int(seconds)),
        "X-Amz-SignedHeaders": "host",
        **({"X-Amz-Security-Token": token} if token else {}),
    }
    query = "&".join(f"{quote(k, safe=_SAFE)}={quote(v, safe=_SAFE)}" for k, v in sorted(params.items()))
    canonical_path = quote(path, safe="/" + _SAFE)
    canonical = "\n".join(["GET", canonical_path, query, f"host:{host}", "", "host", "UNSIGNED-PAYLOAD"])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signing_key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{origin}{canonical_path}?{query}&X-Amz-Signature={signature}"
