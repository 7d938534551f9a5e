"""The canonical event schema, the quarantine schema and the stable reason codes.

Every bronze events table holds `CANONICAL_SCHEMA`; every quarantine table holds `QUARANTINE_SCHEMA`.
Reason codes are part of the public contract: dashboards, alerts and tests match on these strings.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

UTC_MICROS = pa.timestamp("us", tz="UTC")

CANONICAL_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("event_time", UTC_MICROS, nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("ingested_at", UTC_MICROS, nullable=False),
        pa.field("amount", pa.float64(), nullable=True),
        pa.field("currency", pa.string(), nullable=True),
        pa.field("properties", pa.string(), nullable=False),
    ]
)

QUARANTINE_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("quarantined_at", UTC_MICROS, nullable=False),
        pa.field("tenant_id", pa.string(), nullable=True),  # as claimed by the record, if it claimed one
        pa.field("reason_code", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw_payload", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("position", pa.string(), nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),  # the quarantine date, for partitioning
    ]
)

# Fields a producer sends; `event_date`, `source` and `ingested_at` are derived on ingestion.
RECORD_FIELDS: Final[tuple[str, ...]] = (
    "tenant_id",
    "event_id",
    "customer_id",
    "event_type",
    "event_time",
    "amount",
    "currency",
    "properties",
)
REQUIRED_FIELDS: Final[tuple[str, ...]] = ("tenant_id", "event_id", "customer_id", "event_type", "event_time")

# Optional columns a records frame may carry next to RECORD_FIELDS.
RAW_PAYLOAD: Final = "raw_payload"
POSITION: Final = "position"
TYPE_ERROR_FIELD: Final = "type_error_field"  # set by decode_json_records: first field with a wrong JSON type

# Reason codes (stable strings).
MALFORMED_JSON: Final = "malformed_json"
MISSING_FIELD: Final = "missing_field"
WRONG_TYPE: Final = "wrong_type"
UNKNOWN_TENANT: Final = "unknown_tenant"
TENANT_INACTIVE: Final = "tenant_inactive"
UNKNOWN_EVENT_TYPE: Final = "unknown_event_type"
MISSING_PROPERTY: Final = "missing_property"
WRONG_PROPERTY_TYPE: Final = "wrong_property_type"
FUTURE_TIMESTAMP: Final = "future_timestamp"
INVALID_AMOUNT: Final = "invalid_amount"

# Not a contract rule: the stream ingestor quarantines a valid record under this code when its tenant is above
# its plan's ingest quota (`ingestion.stream.quota`); `replay-quarantine` lands it once the quota has risen.
QUOTA_EXCEEDED: Final = "quota_exceeded"

# In precedence order: a record that breaks several rules is quarantined under the first one.
REASON_CODES: Final[tuple[str, ...]] = (
    MALFORMED_JSON,
    MISSING_FIELD,
    WRONG_TYPE,
    UNKNOWN_TENANT,
    TENANT_INACTIVE,
    UNKNOWN_EVENT_TYPE,
    MISSING_PROPERTY,
    WRONG_PROPERTY_TYPE,
    FUTURE_TIMESTAMP,
    INVALID_AMOUNT,
)
