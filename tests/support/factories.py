"""Builders of valid events for tests (each call a fresh event_id)."""

from __future__ import annotations

import uuid
from typing import Any

_DATA: dict[str, dict[str, Any]] = {
    "financial_transactions": {
        "user_id": 4242,
        "amount": "150000.00",
        "payment_method": "qris",
        "order_id": "ORD-2026-0001",
    },
    "data_privacy_events": {
        "user_id": 4242,
        "data_type": "phone_number",
        "action": "collect",
        "consent_status": "granted",
    },
    "security_events": {"source_ip": "203.0.113.7", "user_id": 4242, "outcome": "denied"},
}
_TYPES = {
    "financial_transactions": "payment_completed",
    "data_privacy_events": "consent_recorded",
    "security_events": "login_failed",
}


def event(category: str = "financial_transactions", **data: Any) -> dict[str, Any]:
    """A valid raw event of ``category``; keyword arguments override data fields."""
    return {
        "event_id": str(uuid.uuid4()),
        "category": category,
        "event_type": _TYPES[category],
        "occurred_at": "2026-11-28T10:55:17.123456+07:00",
        "correlation_id": "corr-" + uuid.uuid4().hex[:8],
        "data": {**_DATA[category], **data},
    }
