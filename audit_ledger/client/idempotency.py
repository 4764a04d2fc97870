"""Deterministic event ids: the same business fact always gets the same ``event_id``.

The ledger deduplicates by ``event_id`` (DESIGN §4: same id and same content → 200 with the
original receipt). A fresh random id per call defeats that: a Telegram update delivered twice, or
a bot restarted between the webhook and its acknowledgement, would log the event twice. So a
writer derives the id from an *idempotency key* it already has — for QuickCart the Telegram
``update_id``, or the payment gateway's invoice id — and the event type.

Derivation (version 1; reproducible by any implementation, RFC 9562 §5.5 UUIDv5)::

    name     = UTF-8( event_type ‖ "\\n" ‖ key )     # an int key as its decimal digits
    event_id = UUIDv5(namespace, name)               # lower-case, hyphenated

with the default namespace :data:`EVENT_ID_NAMESPACE` =
``644fc704-42ef-59cd-a79f-1a7889281ef4``, itself
``UUIDv5(NAMESPACE_URL, "https://quickcart.local/audit-ledger/event-id/v1")``. The event type is
part of the name so that one key may carry several events of different types (an update that
records both ``payment_completed`` and ``order_paid``); event types never contain a newline, so
the split is unambiguous. A writer that shares the ledger with another one using the same key
space (two bots numbering updates independently) passes its own namespace.

Example: ``payment_completed`` with key ``1234`` → ``35d1e88a-eed3-5929-91c5-5e9f73a643e4``.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Final

from audit_ledger.client.errors import InvalidEventError

__all__ = ["EVENT_ID_NAMESPACE", "IdempotencyKey", "derive_event_id"]

#: ``UUIDv5(NAMESPACE_URL, "https://quickcart.local/audit-ledger/event-id/v1")``.
EVENT_ID_NAMESPACE: Final = uuid.UUID("644fc704-42ef-59cd-a79f-1a7889281ef4")

#: What a caller may pass as an idempotency key.
IdempotencyKey = str | int


def derive_event_id(
    event_type: str, key: IdempotencyKey, namespace: uuid.UUID = EVENT_ID_NAMESPACE
) -> str:
    """The ``event_id`` of the event of type ``event_type`` identified by ``key`` (see above).

    Raises :class:`InvalidEventError` (naming the field, never the value) for an empty key, a
    bool, a type other than str/int, or text that is not encodable as UTF-8.
    """
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise _bad("idempotency_key", "must be a str or an int")
    text = str(key) if isinstance(key, int) else key
    if not text:
        raise _bad("idempotency_key", "must not be empty")
    if not event_type or "\n" in event_type:
        raise _bad("event_type", "must be non-empty and contain no newline")
    try:
        name = f"{event_type}\n{text}".encode()
    except UnicodeEncodeError:
        raise _bad("idempotency_key", "must be encodable as UTF-8") from None
    # uuid5 takes a str name and encodes it as UTF-8 itself; hash the checked bytes ourselves
    # (RFC 9562 §5.5: SHA-1 over namespace bytes ‖ name, then version and variant bits).
    return str(uuid.UUID(bytes=_sha1_name(namespace, name), version=5))


def _sha1_name(namespace: uuid.UUID, name: bytes) -> bytes:
    # SHA-1 is what UUIDv5 is defined with; it names, it does not protect anything.
    return hashlib.sha1(namespace.bytes + name, usedforsecurity=False).digest()[:16]


def _bad(field: str, problem: str) -> InvalidEventError:
    return InvalidEventError("event refused before sending", [{"field": field, "problem": problem}])
