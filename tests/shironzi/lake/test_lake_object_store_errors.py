"""An object store that does not answer: a lake write fails with one ServiceUnavailableError line (not a raw
OSError with a chain of arrows, nor an `internal` error)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from shironzi.errors import ServiceUnavailableError
from shironzi.lake import append
from shironzi.settings import Settings
from tests._services import free_port


def test_a_write_to_an_unreachable_object_store_is_service_unavailable(settings: Settings) -> None:
    dead = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ALLOW_HTTP": "true",
            "max_retries": "0", "retry_timeout": "1s"}
    with pytest.raises(ServiceUnavailableError) as caught:
        append("s3://nowhere-bucket/lake/eu-west/bronze/events", pa.table({"tenant_id": ["t"]}),
               storage_options=dead)
    message = caught.value.message
    assert "the object store is unreachable" in message and "\n" not in message, message
