"""Compliance: the tamper-evident audit log, lake audit queries, subject/tenant erasure with signed
receipts and retention enforcement (table leases and discovery live in `shironzi.lake`).

`import shironzi.audit` stays light; the Delta-backed pieces load on first use:

    from shironzi.audit import audit, get_audit_log, verify_chains, erase_subject
"""

from __future__ import annotations

from typing import Any

from shironzi.lazy import lazy_attribute

_LAZY: dict[str, str] = {
    "AuditEvent": "shironzi.audit.events",
    "AuditLog": "shironzi.audit.log",
    "audit": "shironzi.audit.log",
    "audit_admin_action": "shironzi.audit.log",
    "get_audit_log": "shironzi.audit.log",
    "read_audit_events": "shironzi.audit.log",
    "record_table_write": "shironzi.audit.log",
    "record_training_run": "shironzi.audit.log",
    "verify_chains": "shironzi.audit.verify",
    "ChainReport": "shironzi.audit.verify",
    "Receipt": "shironzi.audit.erasure",
    "erase_subject": "shironzi.audit.erasure",
    "erase_tenant": "shironzi.audit.erasure",
    "register_erasure_target": "shironzi.audit.erasure",
    "verify_receipt": "shironzi.audit.erasure",
    "enforce_retention": "shironzi.audit.retention",
    "set_retention_override": "shironzi.audit.retention",
    "access": "shironzi.audit.queries",
    "changes": "shironzi.audit.queries",
    "inventory": "shironzi.audit.queries",
    "lineage": "shironzi.audit.queries",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
