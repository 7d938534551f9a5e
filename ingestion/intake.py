"""The event intake that `shironzi.intake` hands to the API: the contract check of the batch and stream
paths, and a producer from the stream package. Registered under the `shironzi.event_intake` entry point."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime

from ingestion.contracts import phi_columns, tenants_frame, validate_payloads
from ingestion.stream.broker import ensure_topic, resolve_bootstrap
from ingestion.stream.kafka import make_sink
from shironzi.errors import ConflictError
from shironzi.intake import EventIntake, IntakeSink, Rejection
from shironzi.settings import Settings


class ContractIntake:
    """EventIntake on the industry contracts and the confluent-kafka producer."""

    def rejections(
        self,
        payloads: Sequence[bytes],
        *,
        tenant_id: str,
        industry: str,
        status: str,
        now: datetime,
        source: str,
    ) -> list[Rejection]:
        if not payloads:
            return []
        checked = validate_payloads(
            list(payloads),
            [str(i) for i in range(len(payloads))],
            tenants=tenants_frame([(tenant_id, industry, status)]),
            now=now,
            source=source,
        )
        rows = checked.quarantined.select(["position", "reason_code", "reason"]).to_pylist()
        return [Rejection(int(row["position"]), row["reason_code"], row["reason"]) for row in rows]

    def open_sink(self, settings: Settings, *, topic: str, partitions: int) -> IntakeSink:
        bootstrap = settings.kafka_bootstrap or resolve_bootstrap(settings)
        with contextlib.suppress(ConflictError):  # an existing topic is used as it is
            ensure_topic(bootstrap, topic, partitions=partitions)
        return make_sink("confluent", bootstrap, linger_ms=1, delivery_timeout_s=10.0)

    def phi_columns(self, industry: str) -> Sequence[str]:
        return phi_columns(industry)


def contract_intake() -> EventIntake:
    """Entry-point factory for `shironzi.event_intake`."""
    return ContractIntake()
