"""Event contracts: the canonical schema, versioned industry contracts and vectorised batch validation.

    from ingestion.contracts import decode_json_records, validate_batch, tenants_frame

    decoded = decode_json_records(payloads, positions, source="kafka:events")   # stream path
    result = validate_batch(decoded, tenants=tenants, now=now, source="kafka:events")
    result = validate_batch(polars_frame_from_a_file, tenants=tenants, now=now, source="batch:landing")

`tenants` is a Polars frame `tenant_id, industry, status[, contract]` built from the tenant registry.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from ingestion.contracts.decode import ACCEPTED_JSON_TYPES, DecodedBatch, decode_json_records
from ingestion.contracts.model import (
    PROPERTY_TYPES,
    Contract,
    EventTypeSpec,
    PropertySpec,
    contract_from_dict,
)
from ingestion.contracts.registry import (
    event_type_table,
    get_contract,
    industries,
    latest_contract_refs,
    list_contracts,
    phi_columns,
    phi_fields,
    pii_fields,
    property_table,
    recoverable_pii_fields,
)
from ingestion.contracts.schema import (
    CANONICAL_SCHEMA,
    FUTURE_TIMESTAMP,
    INVALID_AMOUNT,
    MALFORMED_JSON,
    MISSING_FIELD,
    MISSING_PROPERTY,
    QUARANTINE_SCHEMA,
    QUOTA_EXCEEDED,
    REASON_CODES,
    RECORD_FIELDS,
    REQUIRED_FIELDS,
    TENANT_INACTIVE,
    UNKNOWN_EVENT_TYPE,
    UNKNOWN_TENANT,
    WRONG_PROPERTY_TYPE,
    WRONG_TYPE,
)
from ingestion.contracts.validate import ACTIVE_STATUS, ValidationResult, validate_batch, validate_payloads

__all__ = [
    "ACCEPTED_JSON_TYPES",
    "ACTIVE_STATUS",
    "CANONICAL_SCHEMA",
    "FUTURE_TIMESTAMP",
    "INVALID_AMOUNT",
    "MALFORMED_JSON",
    "MISSING_FIELD",
    "MISSING_PROPERTY",
    "PROPERTY_TYPES",
    "QUARANTINE_SCHEMA",
    "QUOTA_EXCEEDED",
    "REASON_CODES",
    "RECORD_FIELDS",
    "REQUIRED_FIELDS",
    "TENANT_INACTIVE",
    "UNKNOWN_EVENT_TYPE",
    "UNKNOWN_TENANT",
    "WRONG_PROPERTY_TYPE",
    "WRONG_TYPE",
    "Contract",
    "DecodedBatch",
    "EventTypeSpec",
    "PropertySpec",
    "ValidationResult",
    "contract_from_dict",
    "decode_json_records",
    "event_type_table",
    "get_contract",
    "industries",
    "latest_contract_refs",
    "list_contracts",
    "phi_columns",
    "phi_fields",
    "pii_fields",
    "property_table",
    "recoverable_pii_fields",
    "tenants_frame",
    "validate_batch",
    "validate_payloads",
]


def tenants_frame(rows: Iterable[Any] | Mapping[str, Any]) -> pl.DataFrame:
    """A tenants frame for `validate_batch` from `(tenant_id, industry, status)` tuples, dicts or objects with
    those attributes, e.g. `tenants_frame(registry.tenant_directory())` (a mapping: its values are used)."""
    items = list(rows.values()) if isinstance(rows, Mapping) else list(rows)
    out: dict[str, list[str]] = {"tenant_id": [], "industry": [], "status": []}
    for item in items:
        if isinstance(item, tuple) and not hasattr(item, "_fields"):
            tenant_id, industry, status = item
        elif isinstance(item, Mapping):
            tenant_id, industry, status = item["tenant_id"], item["industry"], item["status"]
        else:
            tenant_id, industry, status = item.tenant_id, item.industry, item.status
        out["tenant_id"].append(str(tenant_id))
        out["industry"].append(str(industry))
        out["status"].append(str(status))
    return pl.DataFrame(out, schema={"tenant_id": pl.String, "industry": pl.String, "status": pl.String})
