"""The shipped industry contracts, as declarative data (see `contract_from_dict` for the shape).

A new version is a new entry (`"version": 2`); old versions stay so that replays validate old data
against the contract it was produced under.
"""

from __future__ import annotations

from typing import Any

_EMAIL = {"type": "string", "pii": True, "recoverable": True}
_NAME = {"type": "string", "pii": True, "recoverable": True}
_CLINICAL = {"type": "string", "phi": True}  # PHI: encrypted deterministically at landing (docs/compliance/phi.md)

ECOMMERCE_V1: dict[str, Any] = {
    "industry": "ecommerce",
    "version": 1,
    "signup_event": "customer_signed_up",
    "terminal_event": "account_closed",
    "event_types": {
        "customer_signed_up": {
            "properties": {
                "email": _EMAIL,
                "full_name": _NAME,
                "signup_channel": "string",
                "plan": "string",
                "referrer": {"type": "string", "required": False},
            }
        },
        "session_started": {"properties": {"session_id": "string", "device": "string"}},
        "product_viewed": {"properties": {"product_id": "string", "category": "string", "price": "float"}},
        "cart_updated": {"properties": {"product_id": "string", "quantity": "int", "cart_value": "float"}},
        "order_placed": {
            "amount": True,
            "properties": {
                "order_id": "string",
                "item_count": "int",
                # Optional (relaxed in place: every record v1 accepted before, it still accepts): real order
                # histories rarely carry them and nothing downstream (dbt, features) reads them.
                "payment_method": {"type": "string", "required": False},
                "shipping_postcode": {"type": "string", "pii": True, "recoverable": False, "required": False},
            },
        },
        "order_refunded": {"amount": True, "properties": {"order_id": "string", "refund_reason": "string"}},
        "subscription_changed": {
            "properties": {"from_plan": "string", "to_plan": "string", "auto_renew": "bool"}
        },
        "support_ticket_opened": {
            "properties": {"ticket_id": "string", "topic": "string", "priority": "string"}
        },
        "account_closed": {"properties": {"reason": "string", "closed_by_customer": "bool"}},
    },
}

HEALTHCARE_V1: dict[str, Any] = {
    "industry": "healthcare",
    "version": 1,
    "signup_event": "patient_registered",
    "terminal_event": "patient_disenrolled",
    # The patient's id is PHI: it is encrypted deterministically at landing, so joins and counts still work.
    "phi_columns": ["customer_id"],
    "event_types": {
        "patient_registered": {
            "properties": {
                "full_name": _NAME,
                "date_of_birth": {"type": "timestamp", "pii": True, "recoverable": True},
                "phone": {"type": "string", "pii": True, "recoverable": True},
                "insurance_plan": "string",
            }
        },
        "appointment_booked": {
            "properties": {
                "appointment_id": "string",
                "specialty": _CLINICAL,
                "scheduled_for": "timestamp",
            }
        },
        "appointment_attended": {
            "properties": {
                "appointment_id": "string",
                "specialty": _CLINICAL,
                "duration_minutes": "int",
            }
        },
        "appointment_missed": {
            "properties": {"appointment_id": "string", "specialty": _CLINICAL, "notified": "bool"}
        },
        "prescription_filled": {
            "amount": True,
            "properties": {
                "prescription_id": "string",
                "medication_code": {"type": "string", "pii": True, "recoverable": False, "phi": True},
                "refill": "bool",
            },
        },
        "portal_login": {"properties": {"device": "string", "mfa_used": "bool"}},
        "claim_submitted": {"amount": True, "properties": {"claim_id": "string", "procedure_code": _CLINICAL}},
        "patient_disenrolled": {"properties": {"reason": "string"}},
    },
}

EDUCATION_V1: dict[str, Any] = {
    "industry": "education",
    "version": 1,
    "signup_event": "student_enrolled",
    "terminal_event": "student_withdrew",
    "event_types": {
        "student_enrolled": {"properties": {"email": _EMAIL, "full_name": _NAME, "program": "string"}},
        "course_started": {"properties": {"course_id": "string", "modality": "string"}},
        "lesson_completed": {
            "properties": {"course_id": "string", "lesson_id": "string", "minutes_spent": "int"}
        },
        "assessment_submitted": {
            "properties": {
                "course_id": "string",
                "assessment_id": "string",
                "score": "float",
                "passed": "bool",
            }
        },
        "payment_made": {"amount": True, "properties": {"invoice_id": "string", "installment": "int"}},
        "forum_post": {"properties": {"course_id": "string", "thread_id": "string", "post_length": "int"}},
        "student_withdrew": {"properties": {"reason": "string"}},
    },
}

SHIPPED_CONTRACTS: tuple[dict[str, Any], ...] = (ECOMMERCE_V1, HEALTHCARE_V1, EDUCATION_V1)
