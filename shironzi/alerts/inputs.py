"""The inputs of the alert rules, read from the lake in a few scans (never one per tenant).

- metrics: `ingest_quarantine_share_1h` from the ingestion run log, `webhook_dead_letters_24h` from the
  webhook dead letters;
- anomalies: the rows of `_platform/monitoring/anomalies` (written by the per-tenant data monitors) detected
  in the last day: `tenant_id`, `kind`, `score`, `detected_at`;
- drift: `_platform/monitoring/drift` rows of the last day: `model_name`, `feature`, `psi`, `checked_at`;
- storage: the tenants above their plan's storage quota (`shironzi.tenancy.quotas.storage_over_quota`: one log
  read per table, one grouped count per pooled table).
A table that does not exist yet contributes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shironzi.alerts.rules import AlertInputs
from shironzi.lake.delta import read_polars, table_exists
from shironzi.lake.paths import platform_uri
from shironzi.settings import Settings
from shironzi.tenancy.quotas import storage_over_quota
from shironzi.webhooks.delivery import dead_letters_uri

ANOMALIES = ("monitoring", "anomalies")
DRIFT = ("monitoring", "drift")


def _recent(settings: Settings, parts: tuple[str, ...], time_column: str, since: datetime) -> list[dict[str, Any]]:
    uri = platform_uri(settings.resolved_lake_uri, *parts)
    options = settings.storage_options or None
    if not table_exists(uri, storage_options=options):
        return []
    frame = read_polars(uri, storage_options=options)
    if time_column in frame.columns:
        import polars as pl

        frame = frame.filter(pl.col(time_column) >= since)
    return frame.to_dicts()


def dead_letters_since(settings: Settings, since: datetime) -> int:
    """How many webhook deliveries died since `since`."""
    uri = dead_letters_uri(settings)
    options = settings.storage_options or None
    if not table_exists(uri, storage_options=options):
        return 0
    return read_polars(uri, filters=[("attempted_at", ">=", since)], columns=["delivery_id"],
                       storage_options=options).height


def _quarantine_share(settings: Settings, since: datetime) -> float | None:
    uri = platform_uri(settings.resolved_lake_uri, "ingest", "runs")
    options = settings.storage_options or None
    if not table_exists(uri, storage_options=options):
        return None
    frame = read_polars(uri, filters=[("finished_at", ">=", since)], columns=["received", "quarantined"],
                        storage_options=options)
    received = int(frame["received"].sum()) if frame.height else 0
    return int(frame["quarantined"].sum()) / received if received else None


def collect_inputs(settings: Settings, *, now: datetime | None = None) -> AlertInputs:
    now = now or datetime.now(UTC)
    metrics: dict[str, float] = {"webhook_dead_letters_24h": float(dead_letters_since(settings,
                                                                                    now - timedelta(days=1)))}
    share = _quarantine_share(settings, now - timedelta(hours=1))
    if share is not None:
        metrics["ingest_quarantine_share_1h"] = share
    return AlertInputs(
        metrics=metrics,
        anomalies=_recent(settings, ANOMALIES, "detected_at", now - timedelta(days=1)),
        drift=_recent(settings, DRIFT, "checked_at", now - timedelta(days=1)),
        storage=storage_over_quota(settings),
    )
