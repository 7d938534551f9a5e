"""Prometheus metrics of every pipeline stage, fed by the stage summaries (`shironzi.observability.stage`).

`observe_stage` is the `shironzi.stage_observers` entry point: every stage that logs its one summary line
also gets a span (monitoring/tracing.py) and, here, its metrics: runs, duration and rows for all stages, and
the figures each pipeline cares about (ingest outcomes, quarantine reasons, commit latency and lag; batch files
and rows per source; dbt model durations, rows and test failures; feature rows and freshness; training
metrics by model version; scoring counts). Lake table versions and file counts are read by the monitor process
(monitoring/server.py), not by the stages.

Labels are stage, topic, partition, source, model, reason and outcome names: never a tenant id (one series per
tenant would not scale, and per-tenant figures live in the lake). A batch process pushes its registry to the
monitor process, or to a Pushgateway, after each stage when one is configured.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shironzi.observability import StageSummary
from shironzi.settings import Settings, get_settings

log = logging.getLogger("shironzi.monitoring")

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PUSH_JOB = "shironzi-pipelines"
PUSH_TIMEOUT_S = 5.0  # a loaded monitor may take seconds; an absent one refuses at once

# stage name -> the source label of its batch metrics (batch stages name their source in `source`)
BATCH_STAGES = ("ingest_files", "ingest_sql", "ingest_import", "ingest_batch")
TRAINING_STAGES = {"models:train_churn": "shironzi-churn", "models:train_trend": "shironzi-trend"}
TRAINING_METRICS = ("auc", "smape", "baseline_smape")
SCORING_STAGES = {"models:score_churn": "shironzi-churn", "models:write_forecasts": "shironzi-trend"}
FEATURE_STAGES = ("features:offline", "features:materialize", "features:training_set")


class PipelineMetrics:
    """The pipeline metrics of one process, in their own registry (what is pushed and served)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.stage_runs = Counter("shironzi_stage_runs_total", "Stage runs by stage and outcome.",
                                  ["stage", "outcome"], registry=r)
        self.stage_duration = Histogram("shironzi_stage_duration_seconds", "Stage duration by stage.",
                                        ["stage"], buckets=DURATION_BUCKETS, registry=r)
        self.stage_rows = Counter("shironzi_stage_rows_total", "Rows a stage reported, by stage.", ["stage"],
                                  registry=r)
        self.stage_last_success = Gauge("shironzi_stage_last_success_timestamp_seconds",
                                        "When a stage last finished without error (epoch seconds).", ["stage"],
                                        registry=r)
        self.ingest_events = Counter("shironzi_ingest_events_total",
                                     "Stream events by topic and outcome (landed, quarantined, duplicate).",
                                     ["topic", "outcome"], registry=r)
        self.ingest_quarantined = Counter("shironzi_ingest_quarantined_total",
                                          "Quarantined rows by path (stream, batch) and reason code.",
                                          ["path", "reason"], registry=r)
        self.ingest_commit = Histogram("shironzi_ingest_commit_seconds",
                                       "Stream flush latency: validate, commit to bronze and record the run log.",
                                       ["topic"], buckets=COMMIT_BUCKETS, registry=r)
        self.ingest_lag = Gauge("shironzi_ingest_lag_records",
                                "Records a topic partition is behind its bronze commits (stream supervisor).",
                                ["topic", "partition"], registry=r)
        self.batch_files = Counter("shironzi_batch_files_total", "Files landed by batch ingestion, by source.",
                                   ["source"], registry=r)
        self.batch_rows = Counter("shironzi_batch_rows_total", "Rows landed by batch ingestion, by source.",
                                  ["source"], registry=r)
        self.dbt_model_duration = Histogram("shironzi_dbt_model_duration_seconds", "dbt model build time by model.",
                                            ["model"], buckets=DURATION_BUCKETS, registry=r)
        self.dbt_model_rows = Gauge("shironzi_dbt_model_rows", "Rows the last build of a dbt model wrote.",
                                    ["model"], registry=r)
        self.dbt_test_failures = Counter("shironzi_dbt_test_failures_total", "Failed dbt tests, by region.",
                                         ["region"], registry=r)
        self.feature_rows = Gauge("shironzi_feature_rows", "Rows the last run of a feature job wrote, by job.",
                                  ["job"], registry=r)
        self.feature_last_success = Gauge("shironzi_feature_last_success_timestamp_seconds",
                                          "When a feature job last succeeded (freshness = now - this).", ["job"],
                                          registry=r)
        self.training_metric = Gauge("shironzi_model_training_metric",
                                     "Holdout metrics of a trained model version.", ["model", "version", "metric"],
                                     registry=r)
        self.scored = Counter("shironzi_scoring_rows_total", "Rows written by batch scoring, by model.", ["model"],
                              registry=r)
        self.scored_tenants = Gauge("shironzi_scoring_tenants", "Tenants the last scoring run covered, by model.",
                                    ["model"], registry=r)

        self.dr_lag_versions = Gauge("shironzi_dr_replication_lag_versions",
                                     "Delta commits a region's replica table is behind its source.",
                                     ["region", "table"], registry=r)
        self.dr_lag_seconds = Gauge("shironzi_dr_replication_lag_seconds",
                                    "Age of the oldest commit a region's replica table has not received.",
                                    ["region", "table"], registry=r)

    def record(self, summary: StageSummary, *, failed: bool) -> None:
        """Book one finished stage."""
        name, extra = summary.stage, summary.extra
        self.stage_runs.labels(stage=name, outcome="failed" if failed else "succeeded").inc()
        self.stage_duration.labels(stage=name).observe(summary.seconds)
        self.stage_rows.labels(stage=name).inc(max(0, int(summary.rows or 0)))
        if failed:
            return
        now = time.time()
        self.stage_last_success.labels(stage=name).set(now)
        if name == "ingest_stream_flush":
            self._record_flush(summary)
        elif name == "stream_supervisor":
            for topic, lags in (extra.get("lag") or {}).items():
                for partition, lag in (lags or {}).items():
                    self.ingest_lag.labels(topic=topic, partition=str(partition)).set(lag)
        elif name == "dr_lag":
            for region, tables in (extra.get("lag") or {}).items():
                for table, (versions, seconds) in (tables or {}).items():
                    self.dr_lag_versions.labels(region=region, table=table).set(versions)
                    self.dr_lag_seconds.labels(region=region, table=table).set(seconds)
        elif name in BATCH_STAGES:
            source = str(extra.get("source", "unknown"))
            self.batch_files.labels(source=source).inc(int(extra.get("files", 0) or 0))
            self.batch_rows.labels(source=source).inc(max(0, int(summary.rows or 0)))
            self._record_reasons("batch", extra.get("quarantined_by_reason"))
        elif name == "dbt_build":
            self._record_dbt(summary)
        elif name in FEATURE_STAGES:
            self.feature_rows.labels(job=name).set(summary.rows or 0)
            self.feature_last_success.labels(job=name).set(now)
        elif name in TRAINING_STAGES:
            version = str(extra.get("version") or "unregistered")
            for metric in TRAINING_METRICS:
                if isinstance(extra.get(metric), int | float):
                    self.training_metric.labels(model=TRAINING_STAGES[name], version=version,
                                                metric=metric).set(extra[metric])
        elif name in SCORING_STAGES:
            self.scored.labels(model=SCORING_STAGES[name]).inc(max(0, int(summary.rows or 0)))
            if isinstance(extra.get("tenants"), int):
                self.scored_tenants.labels(model=SCORING_STAGES[name]).set(extra["tenants"])

    def _record_flush(self, summary: StageSummary) -> None:
        topic, extra = str(summary.extra.get("topic", "unknown")), summary.extra
        self.ingest_commit.labels(topic=topic).observe(summary.seconds)
        self.ingest_events.labels(topic=topic, outcome="landed").inc(max(0, int(summary.rows or 0)))
        self.ingest_events.labels(topic=topic, outcome="quarantined").inc(int(extra.get("quarantined", 0) or 0))
        self.ingest_events.labels(topic=topic, outcome="duplicate").inc(int(extra.get("duplicates", 0) or 0))
        self._record_reasons("stream", extra.get("quarantined_by_reason"))

    def _record_reasons(self, path: str, reasons: Mapping[str, int] | None) -> None:
        for reason, rows in (reasons or {}).items():
            self.ingest_quarantined.labels(path=path, reason=reason).inc(rows)

    def _record_dbt(self, summary: StageSummary) -> None:
        extra = summary.extra
        for model, stats in (extra.get("model_stats") or {}).items():
            self.dbt_model_duration.labels(model=model).observe(float(stats.get("seconds", 0.0)))
            if stats.get("rows") is not None:
                self.dbt_model_rows.labels(model=model).set(stats["rows"])
        failed = int(extra.get("tests_failed", 0) or 0)
        if failed:
            self.dbt_test_failures.labels(region=str(extra.get("region", "unknown"))).inc(failed)


PIPELINE_METRICS = PipelineMetrics()


def metric_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry exports (`x_total`, `x_bucket`, ...), for checking dashboards."""
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum"))
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def push_target(settings: Settings) -> str | None:
    """Where a batch process pushes: the Pushgateway when configured, else the monitor process, else nowhere."""
    return settings.pushgateway_url or settings.monitor_url


_push_warned: set[str] = set()


def push_metrics(*, settings: Settings | None = None, metrics: PipelineMetrics | None = None) -> bool:
    """Push this process's pipeline metrics (Pushgateway protocol, which the monitor process speaks too).
    Grouped by host and process, so concurrent processes never overwrite each other's counters (the monitor
    forgets a group idle for a week; a Pushgateway keeps groups until deleted). A target that does not answer
    is logged once and never fails the stage."""
    from prometheus_client import pushadd_to_gateway

    settings = settings or get_settings()
    target = push_target(settings)
    if not target:
        return False
    try:
        pushadd_to_gateway(target, job=PUSH_JOB, grouping_key={"instance": socket.gethostname(),
                                                                "pid": str(os.getpid())},
                           registry=(metrics or PIPELINE_METRICS).registry, timeout=PUSH_TIMEOUT_S)
    except OSError as exc:
        if target not in _push_warned:
            _push_warned.add(target)
            log.warning("cannot push pipeline metrics to %s: %s", target, exc)
        return False
    return True


@contextmanager
def observe_stage(summary: StageSummary) -> Iterator[None]:
    """The stage observer: a span around the stage, then its metrics, then a push when one is configured."""
    from monitoring.tracing import stage_span

    failed = False
    with stage_span(summary):
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            PIPELINE_METRICS.record(summary, failed=failed)
            push_metrics()


def exported_metric_names() -> set[str]:
    """The names the code exports: pipeline metrics, the monitor's lake metrics and the API's metrics."""
    from monitoring.server import LakeCollector
    from serving.telemetry import ApiMetrics

    names = metric_names(PIPELINE_METRICS.registry) | metric_names(ApiMetrics().registry)
    return names | LakeCollector.METRIC_NAMES | {"up"}

