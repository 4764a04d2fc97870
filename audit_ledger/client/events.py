"""Shaping events for sending: the event-type → category rules, the local value checks and the
receipt the server answers with.

Everything here is pure (no I/O), so :meth:`~audit_ledger.client.AuditLedgerClient.
log_compliance_event` refuses an unmapped event type, a naive datetime or a float before any
request is made. Refusals name the failing field, never its value.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from audit_ledger.client.errors import InvalidEventError, ServerError, UnknownEventTypeError
from audit_ledger.client.idempotency import EVENT_ID_NAMESPACE, IdempotencyKey, derive_event_id

__all__ = [
    "DEFAULT_CATEGORY_RULES",
    "FINANCIAL",
    "MAX_SAFE_INTEGER",
    "PRIVACY",
    "SECURITY",
    "Receipt",
    "build_event",
    "category_for",
    "correlation_id_var",
    "dumps",
    "encode_json",
    "format_occurred_at",
    "to_json_value",
]

FINANCIAL: Final = "financial_transactions"
PRIVACY: Final = "data_privacy_events"
SECURITY: Final = "security_events"

#: Event type -> category, first match wins. A pattern ending in ``*`` matches by prefix,
#: anything else exactly; matching ignores case. Extend it with ``category_rules=``.
DEFAULT_CATEGORY_RULES: Final[tuple[tuple[str, str], ...]] = (
    ("payment_*", FINANCIAL),
    ("refund_*", FINANCIAL),
    ("order_paid", FINANCIAL),
    ("consent_*", PRIVACY),
    ("data_*", PRIVACY),
    ("privacy_*", PRIVACY),
    ("erasure_*", PRIVACY),
    ("login_*", SECURITY),
    ("auth_*", SECURITY),
    ("access_*", SECURITY),
    ("security_*", SECURITY),
    ("permission_*", SECURITY),
)

#: The correlation id of the current request/update; ``log_compliance_event`` uses it when the
#: caller passes none (set it once per incoming Telegram update or HTTP request).
correlation_id_var: ContextVar[str | None] = ContextVar("audit_ledger_correlation_id", default=None)

#: Integers beyond this lose precision in IEEE-754 readers; the server refuses them (I-JSON).
MAX_SAFE_INTEGER: Final = 2**53 - 1


@dataclass(frozen=True, slots=True)
class Receipt:
    """Where an event sits in the log, as the server acknowledged it."""

    seq: int
    event_id: str
    leaf_hash: str
    recorded_at: str
    #: True when the event was already in the log (HTTP 200); in a batch, True only when the
    #: whole chunk was a replay (the server reports one status per request).
    replayed: bool = False

    @classmethod
    def from_json(cls, raw: object, *, replayed: bool) -> Receipt:
        """Parse one receipt object; :class:`ServerError` if it is not the documented shape."""
        if isinstance(raw, Mapping):
            seq, event_id = raw.get("seq"), raw.get("event_id")
            leaf_hash, recorded_at = raw.get("leaf_hash"), raw.get("recorded_at")
            if (
                isinstance(seq, int)
                and not isinstance(seq, bool)
                and isinstance(event_id, str)
                and isinstance(leaf_hash, str)
                and isinstance(recorded_at, str)
            ):
                return cls(seq, event_id, leaf_hash, recorded_at, replayed)
        raise ServerError("the server returned a malformed receipt")


def category_for(event_type: str, rules: Sequence[tuple[str, str]] = DEFAULT_CATEGORY_RULES) -> str:
    """The category of ``event_type`` by the first matching rule.

    Raises :class:`UnknownEventTypeError` when none matches.
    """
    lowered = event_type.lower()
    for pattern, category in rules:
        pat = pattern.lower()
        if (pat.endswith("*") and lowered.startswith(pat[:-1])) or lowered == pat:
            return category
    raise UnknownEventTypeError(
        "no category for this event type; pass category= or add a category rule",
        [{"field": "event_type", "problem": f"{event_type!r} matches no category rule"}],
    )


def build_event(
    event_type: str,
    *,
    categorize: Callable[[str], str],
    category: str | None,
    correlation_id: str | None,
    occurred_at: datetime | str | None,
    event_id: str | uuid.UUID | None,
    fields: Mapping[str, Any],
    idempotency_key: IdempotencyKey | None = None,
    namespace: uuid.UUID = EVENT_ID_NAMESPACE,
) -> dict[str, Any]:
    """The event dict to send, with the defaults of
    :meth:`~audit_ledger.client.AuditLedgerClient.build_event` filled in.

    ``categorize`` is called only when ``category`` is not given. The members are computed in
    this order on purpose: an unmapped type is reported before a bad ``occurred_at``, and both
    before a bad data value.

    With ``idempotency_key`` the event must come out byte for byte the same each time the same
    fact is logged (a redelivered update must replay, not conflict): its ``event_id`` is
    derived (:func:`~audit_ledger.client.idempotency.derive_event_id`), ``occurred_at`` is
    required (the source's own time: the Telegram message date, the gateway's paid-at), and the
    correlation id falls back to none instead of a fresh random one.
    """
    if idempotency_key is not None:
        if event_id is not None:
            raise InvalidEventError(
                "pass either event_id or idempotency_key, not both",
                [{"field": "event_id", "problem": "given together with idempotency_key"}],
            )
        if occurred_at is None:
            raise InvalidEventError(
                "occurred_at is required with idempotency_key",
                [
                    {
                        "field": "occurred_at",
                        "problem": "required with idempotency_key (use the "
                        "source's time, so that a redelivered event is identical)",
                    }
                ],
            )
        event_id = derive_event_id(event_type, idempotency_key, namespace)
        fallback_correlation: str | None = None
    else:
        fallback_correlation = uuid.uuid4().hex
    when = occurred_at if occurred_at is not None else datetime.now(UTC)
    return {
        "event_id": str(event_id) if event_id is not None else str(uuid.uuid4()),
        "category": category or categorize(event_type),
        "event_type": event_type,
        "occurred_at": format_occurred_at(when) if isinstance(when, datetime) else when,
        "correlation_id": correlation_id or correlation_id_var.get() or fallback_correlation,
        "data": to_json_value(fields, "$.data"),
    }


def format_occurred_at(moment: datetime) -> str:
    """RFC 3339 UTC with exactly 6 fractional digits and ``Z`` (the ledger's own form)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidEventError(
            "occurred_at must be timezone-aware",
            [{"field": "occurred_at", "problem": "naive datetime (no time zone)"}],
        )
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def to_json_value(value: object, path: str = "$") -> object:
    """Check and convert ``value`` for sending: Decimal becomes a decimal string; floats,
    non-finite Decimals, integers beyond ±(2^53-1) and non-JSON types are refused with
    :class:`InvalidEventError` naming the path (never the value)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise _local(path, "integer outside ±(2^53-1); send it as a string")
        return value
    if isinstance(value, float):
        raise _local(path, "floats are never sent; use an int (IDR) or a Decimal / decimal string")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _local(path, "Decimal must be finite")
        return format(value, "f")
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _local(path, "object member names must be strings")
            out[key] = to_json_value(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [to_json_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise _local(path, f"unsupported type {type(value).__name__}")


def encode_json(value: object) -> bytes:
    """UTF-8 JSON bytes of ``value`` after :func:`to_json_value`'s checks."""
    return dumps(to_json_value(value))


def dumps(checked: object) -> bytes:
    """UTF-8 JSON bytes of a value :func:`to_json_value` has already checked."""
    return json.dumps(checked, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def _local(path: str, problem: str) -> InvalidEventError:
    field = path[2:] if path.startswith("$.") else path
    return InvalidEventError("event refused before sending", [{"field": field, "problem": problem}])
