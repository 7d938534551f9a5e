"""Alert rules, declared as code: a threshold on a platform metric, an anomaly on a tenant, feature drift.

A rule turns `AlertInputs` into `Firing`s. A firing's fingerprint is a hash of its rule and labels, so the
same condition on the same subject is one alert however often it is evaluated (Alertmanager's notion). The
inputs come from the lake (`inputs.collect_inputs`); a test or another process may pass its own.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}


@dataclass(frozen=True)
class AlertInputs:
    """What rules look at: platform metric values, today's tenant anomalies, the latest drift figures."""

    metrics: Mapping[str, float] = field(default_factory=dict)
    anomalies: Sequence[Mapping[str, Any]] = ()  # tenant_id, metric, score, date
    drift: Sequence[Mapping[str, Any]] = ()  # model, feature, psi
    storage: Sequence[Mapping[str, Any]] = ()  # tenant_id, storage_bytes, quota_bytes: tenants above their quota


@dataclass(frozen=True)
class Firing:
    """One alert a rule finds now."""

    rule: str
    severity: str
    summary: str
    labels: Mapping[str, str] = field(default_factory=dict)
    tenant_id: str | None = None
    value: float | None = None

    @property
    def fingerprint(self) -> str:
        identity = {"alertname": self.rule, "tenant_id": self.tenant_id or "", **self.labels}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class Rule(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def severity(self) -> str: ...

    def evaluate(self, inputs: AlertInputs) -> list[Firing]: ...


@dataclass(frozen=True)
class ThresholdRule:
    """Fires while `metric <op> threshold` (a missing metric never fires)."""

    name: str
    metric: str
    op: Literal[">", ">=", "<", "<="]
    threshold: float
    severity: Severity = "warning"
    summary: str = "{metric} is {value:g} ({op} {threshold:g})"

    def evaluate(self, inputs: AlertInputs) -> list[Firing]:
        value = inputs.metrics.get(self.metric)
        if value is None or not _OPS[self.op](float(value), self.threshold):
            return []
        text = self.summary.format(metric=self.metric, value=float(value), op=self.op, threshold=self.threshold)
        return [Firing(self.name, self.severity, text, {"metric": self.metric}, value=float(value))]


@dataclass(frozen=True)
class AnomalyRule:
    """One alert per tenant and anomaly kind (silent, volume_spike, …) scored at least `min_score`."""

    name: str
    min_score: float = 0.0
    severity: Severity = "warning"

    def evaluate(self, inputs: AlertInputs) -> list[Firing]:
        worst: dict[tuple[str, str], float] = {}
        for row in inputs.anomalies:
            score = float(row.get("score") or 0.0)
            key = (str(row["tenant_id"]), str(row.get("kind") or "volume"))
            if score >= self.min_score and score >= worst.get(key, float("-inf")):
                worst[key] = score
        return [Firing(self.name, self.severity, f"{kind} anomaly (score {score:.2f})", {"kind": kind},
                       tenant_id=tenant, value=score) for (tenant, kind), score in sorted(worst.items())]


@dataclass(frozen=True)
class DriftRule:
    """One alert per model feature whose PSI is above the threshold (0.2: retraining territory)."""

    name: str
    psi_threshold: float = 0.2
    severity: Severity = "warning"

    def evaluate(self, inputs: AlertInputs) -> list[Firing]:
        found = []
        for row in inputs.drift:
            psi = float(row.get("psi") or 0.0)
            if psi > self.psi_threshold:
                labels = {"model": str(row.get("model_name") or ""), "feature": str(row.get("feature") or "score")}
                found.append(Firing(self.name, self.severity, f"PSI {psi:.3f} on {labels['feature']}", labels,
                                    value=psi))
        return found


@dataclass(frozen=True)
class StorageQuotaRule:
    """One alert per tenant whose lake storage is above its plan's quota. Landing goes on: the alert (and the
    notice it puts on the tenant's dashboards) asks for a plan change, a quota override or a clean-up."""

    name: str
    severity: Severity = "warning"

    def evaluate(self, inputs: AlertInputs) -> list[Firing]:
        found = []
        for row in inputs.storage:
            used, quota = float(row["storage_bytes"]), float(row["quota_bytes"])
            found.append(Firing(self.name, self.severity, f"storage {used / 1e9:.3g} GB is above the plan's quota "
                                f"of {quota / 1e9:.3g} GB; landing continues", {"quota_gb": f"{quota / 1e9:g}"},
                                tenant_id=str(row["tenant_id"]), value=used))
        return sorted(found, key=lambda f: str(f.tenant_id))


STORAGE_QUOTA_RULE = "TenantStorageOverQuota"
RULES: tuple[Rule, ...] = (
    ThresholdRule("IngestQuarantineHigh", "ingest_quarantine_share_1h", ">", 0.05, "warning",
                  "{value:.1%} of the rows ingested in the last hour were quarantined (> {threshold:.0%})"),
    ThresholdRule("WebhookDeadLetters", "webhook_dead_letters_24h", ">", 0, "warning",
                  "{value:g} webhook deliveries went to the dead letters in the last 24 h"),
    AnomalyRule("TenantDataAnomaly", min_score=0.0, severity="warning"),
    DriftRule("FeatureDrift", psi_threshold=0.2, severity="warning"),
    StorageQuotaRule(STORAGE_QUOTA_RULE, severity="warning"),
)
