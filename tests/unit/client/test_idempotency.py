"""Deterministic event ids (``audit_ledger.client.idempotency``) and how the client uses them:
the documented derivation reproduced with the standard library's own UUIDv5, and events built
from the same key coming out byte for byte the same."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import pytest

from audit_ledger.client import (
    EVENT_ID_NAMESPACE,
    AuditLedgerClient,
    InvalidEventError,
    derive_event_id,
    encode_json,
)

PAID_AT = datetime(2026, 12, 1, 8, 0, 5, tzinfo=UTC)
PAYMENT = {"user_id": 7, "amount": 15000, "payment_method": "qris", "order_id": "ORD-7"}


def test_namespace_and_vector_are_as_documented() -> None:
    assert (
        uuid.uuid5(uuid.NAMESPACE_URL, "https://quickcart.local/audit-ledger/event-id/v1")
        == EVENT_ID_NAMESPACE
    )
    assert derive_event_id("payment_completed", 1234) == "35d1e88a-eed3-5929-91c5-5e9f73a643e4"


@pytest.mark.parametrize(
    ("event_type", "key"),
    [("payment_completed", "INV-000123"), ("order_paid", 987654321), ("login_failed", "ü✓")],
)
def test_derivation_is_uuid5_over_type_newline_key(event_type: str, key: str | int) -> None:
    expected = uuid.uuid5(EVENT_ID_NAMESPACE, f"{event_type}\n{key}")
    assert derive_event_id(event_type, key) == str(expected)
    other = uuid.uuid4()
    assert derive_event_id(event_type, key, other) == str(uuid.uuid5(other, f"{event_type}\n{key}"))


def test_int_and_decimal_string_keys_match_but_types_differ() -> None:
    assert derive_event_id("payment_completed", 42) == derive_event_id("payment_completed", "42")
    # One update carrying two event types gets two ids.
    assert derive_event_id("payment_completed", 42) != derive_event_id("order_paid", 42)


@pytest.mark.parametrize("key", ["", True, 1.5, None, b"raw", "\ud800"])
def test_bad_keys_are_refused_without_echoing_them(key: object) -> None:
    with pytest.raises(InvalidEventError) as info:
        derive_event_id("payment_completed", key)  # type: ignore[arg-type]
    assert info.value.fields == ["idempotency_key"]
    if isinstance(key, str) and key:
        assert key not in str(info.value)


def test_same_key_builds_the_same_bytes() -> None:
    client = AuditLedgerClient("http://ledger.invalid", "token")
    one = client.build_event(
        "payment_completed", idempotency_key=77, occurred_at=PAID_AT, **PAYMENT
    )
    two = client.build_event(
        "payment_completed", idempotency_key=77, occurred_at=PAID_AT, **PAYMENT
    )
    assert encode_json(one) == encode_json(two)
    assert one["event_id"] == derive_event_id("payment_completed", 77)
    assert one["correlation_id"] is None  # never a fresh random one with a key


def test_a_key_needs_occurred_at_and_excludes_event_id() -> None:
    client = AuditLedgerClient("http://ledger.invalid", "token")
    with pytest.raises(InvalidEventError) as info:
        client.build_event("payment_completed", idempotency_key=77, **PAYMENT)
    assert info.value.fields == ["occurred_at"]
    with pytest.raises(InvalidEventError) as info:
        client.build_event(
            "payment_completed",
            idempotency_key=77,
            event_id=uuid.uuid4(),
            occurred_at=PAID_AT,
            **PAYMENT,
        )
    assert info.value.fields == ["event_id"]


def test_no_key_is_warned_once_per_type_or_refused(caplog: pytest.LogCaptureFixture) -> None:
    client = AuditLedgerClient("http://ledger.invalid", "token")
    with caplog.at_level(logging.WARNING, logger="audit_ledger.client"):
        client.build_event("payment_completed", **PAYMENT)
        client.build_event("payment_completed", **PAYMENT)
        client.build_event("payment_completed", event_id=uuid.uuid4(), **PAYMENT)
    warnings = [r for r in caplog.records if "without idempotency_key" in r.getMessage()]
    assert len(warnings) == 1
    strict = AuditLedgerClient("http://ledger.invalid", "token", require_idempotency_key=True)
    with pytest.raises(InvalidEventError) as info:
        strict.build_event("payment_completed", **PAYMENT)
    assert info.value.fields == ["idempotency_key"]
