"""Pre-signed export URLs are exactly the AWS Signature V4 query signatures that botocore computes for the same
object, credentials and moment (path-style on a custom endpoint, virtual-hosted on AWS, with a session token)."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import pytest

from shironzi.errors import ConfigurationError
from shironzi.exports.presign import presigned_url

MOMENT = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
KEY = "_platform/exports/t_abc/exp_0123 name+1.parquet"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
               "AWS_REGION": "eu-west-1"}


def _botocore_url(monkeypatch: pytest.MonkeyPatch, *, endpoint: str | None, token: str | None) -> str:
    import boto3
    import botocore.auth
    from botocore.config import Config

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: MOMENT.replace(tzinfo=None))
    style = "path" if endpoint else "virtual"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id="AKIDEXAMPLE",
                          aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], aws_session_token=token,
                          config=Config(signature_version="s3v4", s3={"addressing_style": style}))
    return str(client.generate_presigned_url("get_object", Params={"Bucket": "lake", "Key": KEY}, ExpiresIn=900))


@pytest.mark.parametrize(("endpoint", "token"), [("http://127.0.0.1:9000", None), (None, "session-token/x+y=")])
def test_presigned_url_matches_botocore(monkeypatch: pytest.MonkeyPatch, endpoint: str | None,
                                        token: str | None) -> None:
    options = {**CREDENTIALS, **({"AWS_ENDPOINT_URL": endpoint} if endpoint else {}),
               **({"AWS_SESSION_TOKEN": token} if token else {})}
    ours = urlsplit(presigned_url(f"s3://lake/{KEY}", storage_options=options, seconds=900, now=MOMENT))
    theirs = urlsplit(_botocore_url(monkeypatch, endpoint=endpoint, token=token))
    assert (ours.scheme, ours.netloc, ours.path) == (theirs.scheme, theirs.netloc, theirs.path)
    assert parse_qs(ours.query) == parse_qs(theirs.query)  # the signature included


def test_only_s3_objects_with_credentials_are_presigned() -> None:
    with pytest.raises(ConfigurationError):
        presigned_url("/tmp/lake/x.csv", storage_options=CREDENTIALS, seconds=60)
    with pytest.raises(ConfigurationError):
        presigned_url("s3://lake/x.csv", storage_options={"AWS_REGION": "eu-west-1"}, seconds=60)
