"""Spark on an object-store lake: the embedded Sail server reaches the S3-protocol server that
SHIRONZI_STORAGE_OPTIONS names (it used to look the bucket up on the public AWS endpoint), and a Spark job
that cannot reach the lake fails with one clear ServiceUnavailableError."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shironzi.errors import ServiceUnavailableError
from shironzi.lake import read_arrow, table_uri
from shironzi.settings import Settings, get_settings
from tests._services import S3Server
from tests.feature_store._fixtures import FsTenant, bronze_events, write_bronze
from transformations.jobs.snapshot_sql import tenant_event_bounds
from transformations.spark import get_spark, lake_access, object_store_env, spark_path

pytestmark = pytest.mark.integration

TENANTS = [FsTenant("t-s3", "shop-s3", "ecommerce", "standard")]


@pytest.fixture
def s3_settings(home: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    import json

    lake = s3.create_bucket("spark-lake") + "/lake"
    monkeypatch.setenv("SHIRONZI_LAKE_URI", lake)
    monkeypatch.setenv("SHIRONZI_STORAGE_OPTIONS", json.dumps(s3.storage_options()))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_object_store_env_maps_storage_options_to_the_variables_sail_reads() -> None:
    env = object_store_env({"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "aws_region": "us-east-1",
                            "access_key_id": "k", "allow_http": "true", "AWS_S3_LOCKING_PROVIDER": "dynamodb",
                            "timeout": "30s"})
    assert env == {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ENDPOINT": "http://127.0.0.1:9",
                   "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "k", "AWS_ALLOW_HTTP": "true",
                   "AWS_S3_LOCKING_PROVIDER": "dynamodb"}


def test_embedded_sail_reads_and_writes_the_s3_lake(s3_settings: Settings, s3: S3Server) -> None:
    events = bronze_events(TENANTS, customers=3, days=10)
    write_bronze(s3_settings, events)
    bronze = table_uri(s3_settings.resolved_lake_uri, layer="bronze", table="events", region="eu-west")
    spark = get_spark(s3_settings)
    with lake_access(s3_settings):
        bounds = tenant_event_bounds(spark, [bronze], tenant_ids=["t-s3"])
        out = table_uri(s3_settings.resolved_lake_uri, layer="gold", table="spark_s3_counts", region="eu-west")
        spark.read.format("delta").load(spark_path(bronze)).groupBy("tenant_id").count() \
            .write.format("delta").mode("overwrite").save(spark_path(out))
    assert set(bounds) == {"t-s3"}
    assert read_arrow(out).column("count").to_pylist() == [events.num_rows]
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket="spark-lake", Prefix="lake/eu-west/gold/")
            .get("Contents", [])]
    assert any(k.endswith(".parquet") for k in keys) and any("_delta_log/" in k for k in keys), keys


def test_a_spark_job_that_cannot_reach_the_lake_is_one_clear_error(s3_settings: Settings) -> None:
    """A lake whose endpoint nothing listens on: the Spark job stops with one readable line naming the fix."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    options = {**s3_settings.storage_options, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{dead}"}
    broken = s3_settings.model_copy(update={"storage_options": options, "lake_uri": "s3://unreachable-lake/lake"})
    spark = get_spark(broken)  # exports the dead endpoint to the embedded server before it opens that bucket
    try:
        with pytest.raises(ServiceUnavailableError) as caught, lake_access(broken):
            spark.read.format("delta").load("s3://unreachable-lake/lake/eu-west/bronze/events").count()
    finally:
        get_spark(s3_settings)  # the live endpoint again for the tests after this one
    message = caught.value.message
    assert "\n" not in message and "cannot reach the lake at s3://unreachable-lake" in message, message
    assert "AWS_ENDPOINT_URL" in message
