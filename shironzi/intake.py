"""Event intake outside the ingestion pipelines (the API's `POST /v1/events`): the kernel's seam.

`serving/` sits beside `ingestion/`, not above it, so it never imports it. It asks this module for the
two things intake needs, the industry-contract check and a producer to the events topic; `ingestion`
provides both under the `shironzi.event_intake` entry point, the way `feature_store` provides an erasure
target. So the API checks events with exactly the code the batch and stream paths use.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib.metadata import entry_points
from typing import NamedTuple, Protocol, runtime_checkable

from shironzi.errors import ConfigurationError
from shironzi.settings import Settings

ENTRY_POINT_GROUP = "shironzi.event_intake"


class Rejection(NamedTuple):
    """One refused payload: its index in the checked list, the quarantine reason code and the reason."""

    position: int
    reason_code: str
    reason: str


class IntakeSink(Protocol):
    """The part of a Kafka producer intake uses; `flush` raises when anything was not delivered."""

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        partition: int | None = None,
        headers: Mapping[str, bytes] | None = None,
    ) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> int: ...

    def close(self, timeout_s: float = 30.0) -> None: ...


@runtime_checkable
class EventIntake(Protocol):
    """Checks one tenant's event payloads against its industry contract and opens the events producer."""

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
        """The payloads the contract refuses (the rest are valid canonical events)."""
        ...

    def open_sink(self, settings: Settings, *, topic: str, partitions: int) -> IntakeSink:
        """A producer to `topic` on the configured broker, creating the topic when it is missing."""
        ...

    def phi_columns(self, industry: str) -> Sequence[str]:
        """The canonical columns the industry's contract declares as PHI (landing encrypts them, so the API
        encrypts a clear `customer_id` to look it up)."""
        ...


@functools.cache
def event_intake() -> EventIntake:
    """The installed intake implementation (the `shironzi.event_intake` entry point), loaded once."""
    found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    if not found:
        raise ConfigurationError(
            f"no event intake is installed (entry point group {ENTRY_POINT_GROUP!r}); "
            "install shironzi with its ingestion package"
        )
    intake = found[0].load()()
    if not isinstance(intake, EventIntake):
        raise ConfigurationError(f"entry point {found[0].value!r} does not provide an EventIntake")
    return intake
