"""The Spark Connect session factory on embedded Sail: a real job over bronze Delta, Delta MERGE and DELETE."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shironzi.errors import ConfigurationError
from shironzi.lake import read_arrow, table_uri
from shironzi.settings import Settings, get_settings
from tests._services import sail_server
from tests.feature_store._fixtures import FsTenant, bronze_events, write_bronze
from transformations import spark as spark_module
from transformations.jobs import snapshot_sql
from transformations.jobs.snapshot_sql import load_events, tenant_event_bounds
from transformations.spark import get_spark, server_address, spark_path, spark_target, stop_spark

pytestmark = pytest.mark.integration

TENANTS = [FsTenant("t-a", "shop-a", "ecommerce", "standard"), FsTenant("t-b", "clinic-b", "healthcare", "standard")]


def test_job_on_sail_reads_bronze_and_writes_delta_that_deltalake_reads(settings: Settings) -> None:
    events = bronze_events(TENANTS, customers=4, days=30)
    write_bronze(settings, events)
    spark = get_spark(settings)
    assert spark_target(settings) == "sail"
    assert get_spark(settings) is spark  # one server and session per process

    from pyspark.sql import functions as F

    out = table_uri(settings.resolved_lake_uri, layer="gold", table="spark_daily_counts", region="eu-west")
    daily = (load_events(spark, [table_uri(settings.resolved_lake_uri, layer="bronze", table="events",
                                           region="eu-west")], tenant_ids=["t-a"])
             .groupBy("tenant_id", "event_date").agg(F.count("*").alias("events"), F.sum("amount").alias("amount")))
    daily.write.format("delta").mode("overwrite").partitionBy("event_date").save(spark_path(out))

    written = read_arrow(out).sort_by("event_date")
    mine = events.filter(pc.equal(events.column("tenant_id"), "t-a"))
    expected = mine.group_by("event_date").aggregate([("event_id", "count"), ("amount", "sum")]).sort_by("event_date")
    assert written.column("tenant_id").unique().to_pylist() == ["t-a"]  # the tenant filter held
    assert written.column("event_date").to_pylist() == expected.column("event_date").to_pylist()
    assert written.column("events").to_pylist() == expected.column("event_id_count").to_pylist()
    assert written.column("amount").to_pylist() == pytest.approx(expected.column("amount_sum").to_pylist())

    bounds = tenant_event_bounds(spark, [table_uri(settings.resolved_lake_uri, layer="bronze", table="events",
                                                   region="eu-west")], tenant_ids=["t-a", "t-b", "t-none"])
    assert set(bounds) == {"t-a", "t-b"}
    assert bounds["t-a"] == (pc.min(mine.column("event_date")).as_py(), pc.max(mine.column("event_date")).as_py())


def test_many_tenants_are_selected_by_a_semi_join_with_the_same_rows(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past IN_LIST_TENANTS the tenants are a semi join (an IN list of 100,000 literals cost minutes a scan): the
    same rows, only the chosen tenants', and no column added."""
    events = bronze_events(TENANTS, customers=4, days=30)
    write_bronze(settings, events)
    spark = get_spark(settings)
    bronze = [table_uri(settings.resolved_lake_uri, layer="bronze", table="events", region="eu-west")]
    chosen = ["t-a", "t-none"]

    def rows() -> pa.Table:
        frame = load_events(spark, bronze, tenant_ids=chosen)
        return frame.toArrow().sort_by([("tenant_id", "ascending"), ("event_id", "ascending")])

    as_list = rows()
    monkeypatch.setattr(snapshot_sql, "IN_LIST_TENANTS", 1)
    as_join = rows()
    assert as_join.column_names == as_list.column_names
    assert as_join.equals(as_list)
    assert as_join.column("tenant_id").unique().to_pylist() == ["t-a"]
    assert as_join.num_rows == pc.sum(pc.equal(events.column("tenant_id"), "t-a")).as_py() > 0
    assert set(tenant_event_bounds(spark, bronze, tenant_ids=["t-a", "t-b", "t-none"])) == {"t-a", "t-b"}


def test_delta_merge_and_delete_through_sail(settings: Settings) -> None:
    spark = get_spark(settings)
    uri = table_uri(settings.resolved_lake_uri, layer="silver", table="spark_merge", region="eu-west")
    first = pa.table({"tenant_id": ["t-a", "t-a", "t-b"], "customer_id": ["c1", "c2", "c1"], "score": [1.0, 2.0, 3.0]})
    spark.createDataFrame(first).write.format("delta").mode("append").save(spark_path(uri))
    spark.createDataFrame(pa.table({"tenant_id": ["t-a", "t-b"], "customer_id": ["c2", "c9"], "score": [20.0, 90.0]})
                          ).createOrReplaceTempView("updates")
    spark.sql(f"""MERGE INTO delta.`{spark_path(uri)}` t USING updates s
                  ON t.tenant_id = s.tenant_id AND t.customer_id = s.customer_id
                  WHEN MATCHED THEN UPDATE SET score = s.score WHEN NOT MATCHED THEN INSERT *""").collect()
    merged = read_arrow(uri).sort_by([("tenant_id", "ascending"), ("customer_id", "ascending")]).to_pylist()
    assert [(r["tenant_id"], r["customer_id"], r["score"]) for r in merged] == [
        ("t-a", "c1", 1.0), ("t-a", "c2", 20.0), ("t-b", "c1", 3.0), ("t-b", "c9", 90.0)]
    spark.sql(f"DELETE FROM delta.`{spark_path(uri)}` WHERE tenant_id = 't-b'").collect()
    assert read_arrow(uri).column("tenant_id").unique().to_pylist() == ["t-a"]
    from shironzi.lake import history

    assert [h["operation"] for h in history(uri)][:2] == ["DELETE", "MERGE"]


def test_a_bad_remote_is_a_configuration_error(home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIRONZI_SPARK_REMOTE", "http://spark:15002")
    get_settings.cache_clear()
    assert spark_target() == "cluster"
    with pytest.raises(ConfigurationError, match="sc://"):
        get_spark()


def test_a_session_per_server_even_after_another_server_was_used(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A job on the embedded server gets a session on the embedded server, not the session of a standalone
    server used earlier in the process (pyspark's getOrCreate hands back whatever session is active)."""
    from tests._services import free_port

    stop_spark()  # no session is active: the standalone one becomes the active one, as in a fresh process
    port = free_port()
    with sail_server(port, tmp_path / "sail.log"):
        monkeypatch.setenv("SHIRONZI_SPARK_REMOTE", f"sc://127.0.0.1:{port}")
        get_settings.cache_clear()
        standalone = get_spark()
        assert standalone.client._builder.endpoint == f"127.0.0.1:{port}"  # the channel's target
        assert standalone.sql("select 1 as one").collect()[0].one == 1
    monkeypatch.delenv("SHIRONZI_SPARK_REMOTE")
    get_settings.cache_clear()
    embedded = get_spark()
    assert embedded is not standalone and embedded.client._builder.endpoint != f"127.0.0.1:{port}"
    assert embedded.sql("select 2 as two").collect()[0].two == 2  # the standalone server is gone
    # dbt-spark's getOrCreate() and MLflow's run-start probe use the active session: never the dead server's
    from pyspark.sql import SparkSession

    assert SparkSession.getActiveSession() is embedded  # what MLflow probes
    assert type(embedded).builder.getOrCreate() is embedded  # what dbt-spark uses


def test_a_session_the_server_dropped_while_idle_is_replaced(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A server drops a session idle past its timeout (Sail: 900 s); the cached session is then replaced,
    not handed out to fail with "session … is not running" (a long test run or a long-lived API process)."""
    import time

    from tests._services import free_port

    port = free_port()
    monkeypatch.setattr(spark_module, "PROBE_AFTER_IDLE_SECONDS", 0.5)
    with sail_server(port, tmp_path / "sail.log", SAIL_SPARK__SESSION_TIMEOUT_SECS="2"):
        monkeypatch.setenv("SHIRONZI_SPARK_REMOTE", f"sc://127.0.0.1:{port}")
        get_settings.cache_clear()
        try:
            first = get_spark()
            assert first.sql("select 1 as one").collect()[0].one == 1
            time.sleep(4)  # past the server's idle timeout
            with pytest.raises(Exception, match="not running"):
                first.sql("select 1 as one").collect()  # what the cached session would have done
            second = get_spark()
            assert second is not first and second.sql("select 2 as two").collect()[0].two == 2
            assert get_spark() is second  # a live session is kept
        finally:
            stop_spark()


def test_a_server_that_accepts_no_connections_fails_at_once(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No minutes of client retries: one ServiceUnavailableError that names the server."""
    import time

    from shironzi.errors import ServiceUnavailableError
    from tests._services import free_port

    remote = f"sc://127.0.0.1:{free_port()}"
    monkeypatch.setenv("SHIRONZI_SPARK_REMOTE", remote)
    get_settings.cache_clear()
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match="does not answer"):
        get_spark()
    assert time.monotonic() - started < 10


def test_the_endpoint_of_a_spark_connect_url() -> None:
    assert server_address("sc://spark:15003") == ("spark", 15003)
    assert server_address("sc://spark") == ("spark", 15002)
    assert server_address("sc://127.0.0.1:15002/;session_id=abc;use_ssl=true") == ("127.0.0.1", 15002)
    assert server_address("sc://[::1]") == ("::1", 15002)
    with pytest.raises(ConfigurationError, match="names no host"):
        server_address("sc://")
