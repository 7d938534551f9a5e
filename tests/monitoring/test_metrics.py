"""Every stage feeds the pipeline metrics through the kernel's one hook (`shironzi.observability.stage`), with
labels that never name a tenant, and pushes them to the monitor process when one is configured."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitoring.metrics import PIPELINE_METRICS, PipelineMetrics, metric_names, push_metrics
from shironzi.dr.replicate import TableLag, metric_lag
from shironzi.observability import StageSummary, stage, stage_observers
from shironzi.settings import Settings
from tests.monitoring._fixtures import running_monitor, sample


def _value(name: str, **labels: str) -> float:
    return PIPELINE_METRICS.registry.get_sample_value(name, labels) or 0.0


def test_the_monitoring_observer_is_installed_through_the_entry_point() -> None:
    from monitoring.metrics import observe_stage

    assert observe_stage in stage_observers()


def test_a_stream_flush_stage_books_events_quarantine_reasons_and_commit_latency() -> None:
    before_landed = _value("shironzi_ingest_events_total", topic="metrics-t", outcome="landed")
    before_reason = _value("shironzi_ingest_quarantined_total", path="stream", reason="missing_field")
    before_commits = _value("shironzi_ingest_commit_seconds_count", topic="metrics-t")
    with stage("ingest_stream_flush", topic="metrics-t", worker="w0") as summary:
        summary.rows = 7
        summary.extra.update(quarantined=3, duplicates=1, quarantined_by_reason={"missing_field": 2, "bad_type": 1})
    assert _value("shironzi_ingest_events_total", topic="metrics-t", outcome="landed") - before_landed == 7
    assert _value("shironzi_ingest_quarantined_total", path="stream", reason="missing_field") - before_reason == 2
    assert _value("shironzi_ingest_commit_seconds_count", topic="metrics-t") - before_commits == 1
    assert _value("shironzi_stage_runs_total", stage="ingest_stream_flush", outcome="succeeded") >= 1


def test_a_failed_stage_counts_as_failed_and_sets_no_success_time() -> None:
    with pytest.raises(RuntimeError), stage("metrics_failing_stage"):
        raise RuntimeError("boom")
    assert _value("shironzi_stage_runs_total", stage="metrics_failing_stage", outcome="failed") == 1
    assert PIPELINE_METRICS.registry.get_sample_value(
        "shironzi_stage_last_success_timestamp_seconds", {"stage": "metrics_failing_stage"}) is None


def test_every_pipeline_gets_its_figures_and_no_label_holds_a_tenant_id() -> None:
    metrics = PipelineMetrics()
    tenant = "acme-tenant-0001"
    summaries = [
        StageSummary("ingest_batch", rows=50, extra={"source": "landing", "files": 2, "tenant": tenant,
                                                       "quarantined_by_reason": {"unknown_tenant": 4}}),
        StageSummary("dbt_build", rows=2, extra={"region": "eu-west", "tenant": tenant, "tests_failed": 1,
                                                   "model_stats": {"fct_events": {"seconds": 1.5, "rows": 120}}}),
        StageSummary("features:offline", rows=300, extra={"tenants": 4}),
        StageSummary("models:train_churn", rows=900, extra={"version": "3", "auc": 0.81}),
        StageSummary("models:score_churn", rows=400, extra={"tenants": 4}),
        StageSummary("stream_supervisor", rows=1, extra={"lag": {"events": {0: 12, 1: 0}}}),
        StageSummary("api_event_intake", rows=5, extra={"tenant_id": tenant, "topic": "events"}),
        StageSummary("dr_lag", rows=3, extra={"lag": {"eu-west": metric_lag([
            TableLag("eu-west/bronze/events", 9, 6, 4.5), TableLag(f"eu-west/tenants/{tenant}/gold/daily", 2, 1, 1.0),
            TableLag("eu-west/tenants/other-tenant/gold/daily", 5, 3, 0.5)])}}),
    ]
    for summary in summaries:
        metrics.record(summary, failed=False)
    get = metrics.registry.get_sample_value
    assert get("shironzi_batch_files_total", {"source": "landing"}) == 2
    assert get("shironzi_batch_rows_total", {"source": "landing"}) == 50
    assert get("shironzi_ingest_quarantined_total", {"path": "batch", "reason": "unknown_tenant"}) == 4
    assert get("shironzi_dbt_model_rows", {"model": "fct_events"}) == 120
    assert get("shironzi_dbt_model_duration_seconds_count", {"model": "fct_events"}) == 1
    assert get("shironzi_dbt_test_failures_total", {"region": "eu-west"}) == 1
    assert get("shironzi_feature_rows", {"job": "features:offline"}) == 300
    assert get("shironzi_model_training_metric", {"model": "shironzi-churn", "version": "3", "metric": "auc"}) == 0.81
    assert get("shironzi_scoring_rows_total", {"model": "shironzi-churn"}) == 400
    assert get("shironzi_scoring_tenants", {"model": "shironzi-churn"}) == 4
    assert get("shironzi_ingest_lag_records", {"topic": "events", "partition": "0"}) == 12
    pooled, dedicated = {"region": "eu-west", "table": "eu-west/bronze/events"}, {
        "region": "eu-west", "table": "eu-west/tenants/*/gold/daily"}
    assert get("shironzi_dr_replication_lag_versions", pooled) == 3
    assert get("shironzi_dr_replication_lag_seconds", pooled) == 4.5
    assert get("shironzi_dr_replication_lag_versions", dedicated) == 2  # the worst dedicated table, no tenant id
    labels = {value for family in metrics.registry.collect() for s in family.samples for value in s.labels.values()}
    assert tenant not in labels
    assert {"shironzi_stage_runs_total", "shironzi_ingest_lag_records", "shironzi_dbt_model_duration_seconds_bucket"} \
        <= metric_names(metrics.registry)


def test_a_stage_pushes_to_the_monitor_process_when_one_is_configured(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shironzi.settings import get_settings

    with running_monitor(settings) as (url, _monitor):
        monkeypatch.setenv("SHIRONZI_MONITOR_URL", url)
        get_settings.cache_clear()
        with stage("models:score_churn") as summary:
            summary.rows = 11
        text = _monitor_text(url)
        assert sample(text, "shironzi_scoring_rows_total", model="shironzi-churn", job="shironzi-pipelines") == \
            _value("shironzi_scoring_rows_total", model="shironzi-churn")
        assert sample(text, "shironzi_stage_runs_total", stage="models:score_churn", outcome="succeeded",
                      pid=str(os.getpid())) >= 1  # type: ignore[operator]
        # another process on this host pushes its own group: neither overwrites the other
        subprocess.run([sys.executable, "-c", "from shironzi.observability import stage\n"
                        "with stage('models:score_churn') as s:\n    s.rows = 5\n"],
                       env={**os.environ, "SHIRONZI_MONITOR_URL": url}, check=True, timeout=120)
        text = _monitor_text(url)
        assert sample(text, "shironzi_scoring_rows_total", pid=str(os.getpid())) == \
            _value("shironzi_scoring_rows_total", model="shironzi-churn")
        pids = {s.labels["pid"] for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "shironzi_scoring_rows_total"}
        assert len(pids) == 2
    # the monitor is gone: the push fails quietly, the stage does not
    assert push_metrics() is False
    with stage("models:score_churn") as summary:
        summary.rows = 1
    get_settings.cache_clear()


def _monitor_text(url: str) -> str:
    from tests.monitoring._fixtures import get

    status, text = get(url + "/metrics")
    assert status == 200
    return text
