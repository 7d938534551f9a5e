"""Evaluating the alert rules: open alerts in `_platform/alerts`, silences, Alertmanager-format delivery.

An evaluation pass compares what the rules find now with the open alerts (one row per fingerprint):
- a new fingerprint becomes an alert, `firing` (delivered) or `silenced` (a matching silence: not delivered);
- a fingerprint still found is the same alert: no new delivery (de-duplication), only `last_seen_at` moves;
- an open alert no longer found is `resolved` (delivered as resolved if it had been delivered as firing).
All the changes of a pass are one merge into `_platform/alerts`. Deliveries go through `shironzi.webhooks` to
every `SHIRONZI_ALERT_WEBHOOK_URLS` receiver as Alertmanager's webhook JSON (version 4), and to the tenant's
own webhooks (event `alert`, only its own alerts) when the tenant has the `notifications` module.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shironzi.alerts.inputs import collect_inputs
from shironzi.alerts.rules import RULES, AlertInputs, Firing, Rule
from shironzi.errors import InvalidInputError
from shironzi.lake.delta import append, merge, read_polars, table_exists
from shironzi.lake.paths import platform_uri
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from shironzi.webhooks.delivery import NewDelivery, send
from shironzi.webhooks.notify import Notification, notify_many

if TYPE_CHECKING:
    import pyarrow as pa

OPEN = ("firing", "silenced")
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert
RECEIVER = "shironzi"


@dataclass
class EvaluationResult:
    firing: list[str] = field(default_factory=list)  # fingerprints newly delivered as firing
    silenced: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    still_open: list[str] = field(default_factory=list)  # de-duplicated: already open, not delivered again


def alerts_uri(settings: Settings) -> str:
    return platform_uri(settings.resolved_lake_uri, "alerts")


def silences_uri(settings: Settings) -> str:
    return platform_uri(settings.resolved_lake_uri, "alert_silences")


def _opts(settings: Settings) -> dict[str, str] | None:
    return settings.storage_options or None


def _alert_schema() -> pa.Schema:
    import pyarrow as pa

    stamp = pa.timestamp("us", tz="UTC")
    return pa.schema([
        pa.field("fingerprint", pa.string(), nullable=False), pa.field("rule", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False), pa.field("tenant_id", pa.string()),
        pa.field("status", pa.string(), nullable=False), pa.field("started_at", stamp, nullable=False),
        pa.field("ends_at", stamp), pa.field("last_seen_at", stamp, nullable=False),
        pa.field("summary", pa.string(), nullable=False), pa.field("labels", pa.string(), nullable=False),
        pa.field("value", pa.float64()), pa.field("delivered", pa.bool_(), nullable=False),
    ])


def _silence_schema() -> pa.Schema:
    import pyarrow as pa

    stamp = pa.timestamp("us", tz="UTC")
    return pa.schema([
        pa.field("silence_id", pa.string(), nullable=False), pa.field("rule", pa.string()),
        pa.field("tenant_id", pa.string()), pa.field("fingerprint", pa.string()),
        pa.field("starts_at", stamp, nullable=False), pa.field("ends_at", stamp, nullable=False),
        pa.field("created_by", pa.string(), nullable=False), pa.field("comment", pa.string()),
    ])


def _read(uri: str, settings: Settings, filters: Any = None) -> list[dict[str, Any]]:
    if not table_exists(uri, storage_options=_opts(settings)):
        return []
    return read_polars(uri, filters=filters, storage_options=_opts(settings)).to_dicts()


def list_alerts(*, settings: Settings | None = None, include_resolved: bool = False) -> list[dict[str, Any]]:
    """The open alerts (or every alert row), most severe and newest first."""
    settings = settings or get_settings()
    rows = _read(alerts_uri(settings), settings)
    if not include_resolved:
        rows = [r for r in rows if r["status"] in OPEN]
    return sorted(rows, key=lambda r: (_severity_rank(r["severity"]), -r["started_at"].timestamp()))


def _severity_rank(severity: str) -> int:
    return {"critical": 0, "warning": 1, "info": 2}.get(severity, 3)


# --- silences ----------------------------------------------------------------------------------------


def add_silence(*, rule: str | None = None, tenant_id: str | None = None, fingerprint: str | None = None,
                duration: timedelta, created_by: str, comment: str | None = None,
                settings: Settings | None = None) -> str:
    """Silence the alerts that match every given matcher for `duration`; returns the silence id."""
    import pyarrow as pa

    settings = settings or get_settings()
    if rule is None and tenant_id is None and fingerprint is None:
        raise InvalidInputError("a silence needs at least one matcher: rule, tenant or fingerprint")
    if duration <= timedelta(0):
        raise InvalidInputError(f"a silence must last a positive time, got {duration}", field="duration")
    now = datetime.now(UTC)
    silence_id = uuid.uuid4().hex[:12]
    row = {"silence_id": silence_id, "rule": rule, "tenant_id": tenant_id, "fingerprint": fingerprint,
           "starts_at": now, "ends_at": now + duration, "created_by": created_by, "comment": comment}
    append(silences_uri(settings), pa.Table.from_pylist([row], schema=_silence_schema()),
           storage_options=_opts(settings))
    return silence_id


def active_silences(*, settings: Settings | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    return [s for s in _read(silences_uri(settings), settings, [("ends_at", ">", now)])
            if s["starts_at"] <= now]


def _silenced(firing: Firing, silences: Sequence[Mapping[str, Any]]) -> bool:
    facts = {"rule": firing.rule, "tenant_id": firing.tenant_id, "fingerprint": firing.fingerprint}
    return any(all(s[k] is None or s[k] == facts[k] for k in facts) for s in silences)


# --- evaluation ----------------------------------------------------------------------------------------


def evaluate(*, rules: Sequence[Rule] = RULES, inputs: AlertInputs | None = None,
             settings: Settings | None = None) -> EvaluationResult:
    """One pass: the rules over the inputs (read from the lake unless given), the alert table updated in one
    merge, and the new or resolved alerts delivered."""
    settings = settings or get_settings()
    now = datetime.now(UTC)
    result = EvaluationResult()
    with stage("alerts:evaluate", rules=len(rules)) as summary:
        found = {f.fingerprint: f for rule in rules for f in rule.evaluate(inputs or collect_inputs(settings))}
        open_alerts = {r["fingerprint"]: r for r in list_alerts(settings=settings)}
        silences = active_silences(settings=settings, now=now)
        changed: list[dict[str, Any]] = []
        to_fire: list[dict[str, Any]] = []
        to_resolve: list[dict[str, Any]] = []
        for fingerprint, firing in found.items():
            known = open_alerts.get(fingerprint)
            status = "silenced" if _silenced(firing, silences) else "firing"
            row = _row(firing, status, now, known)
            if known is not None and (known["status"] == status or status == "silenced"):
                result.still_open.append(fingerprint)
            elif status == "firing":
                row["delivered"] = True
                to_fire.append(row)
                result.firing.append(fingerprint)
            else:
                result.silenced.append(fingerprint)
            changed.append(row)
        for fingerprint, known in open_alerts.items():
            if fingerprint not in found:
                row = {**known, "status": "resolved", "ends_at": now}
                changed.append(row)
                result.resolved.append(fingerprint)
                if known["delivered"]:
                    to_resolve.append(row)
        if changed:
            import pyarrow as pa

            merge(alerts_uri(settings), pa.Table.from_pylist(changed, schema=_alert_schema()), keys=["fingerprint"],
                  storage_options=_opts(settings))
        deliver_alerts(to_fire, to_resolve, settings=settings)
        summary.rows = len(found)
        summary.extra.update(firing=len(result.firing), silenced=len(result.silenced),
                             resolved=len(result.resolved), still_open=len(result.still_open))
    return result


def _row(firing: Firing, status: str, now: datetime, known: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "fingerprint": firing.fingerprint, "rule": firing.rule, "severity": firing.severity,
        "tenant_id": firing.tenant_id, "status": status,
        "started_at": known["started_at"] if known is not None else now, "ends_at": None, "last_seen_at": now,
        "summary": firing.summary, "labels": json.dumps(dict(firing.labels), sort_keys=True),
        "value": firing.value, "delivered": bool(known["delivered"]) if known is not None else False,
    }


# --- delivery ----------------------------------------------------------------------------------------


def _stamp(value: datetime | None) -> str:
    return ZERO_TIME if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _am_alert(row: Mapping[str, Any]) -> dict[str, Any]:
    labels = {"alertname": row["rule"], "severity": row["severity"], **json.loads(row["labels"])}
    if row["tenant_id"]:
        labels["tenant_id"] = row["tenant_id"]
    return {"status": "resolved" if row["status"] == "resolved" else "firing", "labels": labels,
            "annotations": {"summary": row["summary"]}, "startsAt": _stamp(row["started_at"]),
            "endsAt": _stamp(row["ends_at"]), "generatorURL": "", "fingerprint": row["fingerprint"]}


def alertmanager_payload(rows: Sequence[Mapping[str, Any]], status: str) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) for alerts of one status."""
    alerts = [_am_alert(r) for r in rows]
    common = dict(alerts[0]["labels"]) if alerts else {}
    for alert in alerts[1:]:
        common = {k: v for k, v in common.items() if alert["labels"].get(k) == v}
    return {"version": "4", "groupKey": f"{{}}:{{status=\"{status}\"}}", "truncatedAlerts": 0, "status": status,
            "receiver": RECEIVER, "groupLabels": {}, "commonLabels": common, "commonAnnotations": {},
            "externalURL": "", "alerts": alerts}


def deliver_alerts(firing: Sequence[Mapping[str, Any]], resolved: Sequence[Mapping[str, Any]], *,
                   settings: Settings) -> None:
    """Send the firing and the resolved alerts to the platform receivers and to the tenants concerned."""
    platform: list[NewDelivery] = []
    tenants: list[Notification] = []
    for status, rows in (("firing", firing), ("resolved", resolved)):
        if not rows:
            continue
        key = f"alerts:{status}:" + ",".join(sorted(r["fingerprint"] for r in rows))
        platform += [NewDelivery(None, url, "alert", alertmanager_payload(rows, status), key)
                     for url in settings.alert_webhook_urls]
        by_tenant: dict[str, list[Mapping[str, Any]]] = {}
        for row in rows:
            if row["tenant_id"]:
                by_tenant.setdefault(row["tenant_id"], []).append(row)
        tenants += [Notification(tid, "alert", alertmanager_payload(own, status),
                                 f"alerts:{status}:" + ",".join(sorted(r["fingerprint"] for r in own)))
                    for tid, own in by_tenant.items()]
    if platform:
        send(platform, settings=settings)
    if tenants:
        notify_many(tenants, settings=settings)
