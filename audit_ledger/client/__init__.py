"""Async HTTP client for the audit-ledger API v1 (DESIGN §4), for the bot and other writers.

The QuickCart observability plan (§5) asks for ``log_compliance_event(event_type, ...)``; this
is that call, backed by the ledger instead of a plain table::

    async with AuditLedgerClient("http://ledger.internal:8000", token) as ledger:
        receipt = await ledger.log_compliance_event(
            "payment_completed", idempotency_key=invoice_id, occurred_at=paid_at,
            user_id=4242, amount=Decimal("150000.00"), payment_method="qris", order_id="ORD-1",
        )

Retries are safe because ``event_id`` is the ledger's idempotency key: an event is built (and
encoded to bytes) once, and exactly those bytes are resent until the server acknowledges them.
A retry of an event the server had already committed gets 200 and the original receipt, so every
event lands exactly once. The ``event_id`` is derived from the caller's idempotency key (the
Telegram ``update_id``, the invoice id: :mod:`~audit_ledger.client.idempotency`), so a
redelivered update is the same event too; a durable :class:`~audit_ledger.client.outbox.Outbox`
keeps events on disk across bot restarts and ledger downtime. Transient failures (connection
errors, timeouts, 502/503/504, 429) are
retried with capped exponential backoff and jitter, honouring ``Retry-After``; a 4xx is a
decision about the request, never retried, and raised as a typed :class:`ClientError`.

The package depends on ``httpx`` and the standard library only (plus the package's error base),
so writers need none of the server's database or crypto stack at run time. Tokens never appear
in ``repr`` or in exception messages; problem details from the server never echo submitted
values, and neither do the local checks here.

The package is split by job: :mod:`~audit_ledger.client.errors` (the typed errors),
:mod:`~audit_ledger.client.events` (categories, value checks, receipts),
:mod:`~audit_ledger.client.transport` (the HTTP session, retries, ``Retry-After``),
:mod:`~audit_ledger.client.idempotency` (deterministic event ids from an idempotency key),
:mod:`~audit_ledger.client.outbox` (the durable local outbox) and
:mod:`~audit_ledger.client.api` (:class:`AuditLedgerClient`). Import from here.
"""

from __future__ import annotations

from audit_ledger.client.api import DEFAULT_BATCH_SIZE as DEFAULT_BATCH_SIZE
from audit_ledger.client.api import AuditLedgerClient
from audit_ledger.client.errors import (
    AuthError,
    ClientError,
    ConflictError,
    ForbiddenError,
    InvalidEventError,
    NotFoundError,
    PayloadTooLargeError,
    ServerError,
    ServerUnavailable,
    ServerUnavailableError,
    UnknownEventTypeError,
)
from audit_ledger.client.events import (
    DEFAULT_CATEGORY_RULES,
    Receipt,
    category_for,
    correlation_id_var,
)

# Public names of the single-module client that were never in ``__all__`` (tests and scripts
# import some of them): re-exported explicitly so ``from audit_ledger.client import X`` keeps
# working for every one, without widening ``import *``.
from audit_ledger.client.events import FINANCIAL as FINANCIAL
from audit_ledger.client.events import MAX_SAFE_INTEGER as MAX_SAFE_INTEGER
from audit_ledger.client.events import PRIVACY as PRIVACY
from audit_ledger.client.events import SECURITY as SECURITY
from audit_ledger.client.events import encode_json as encode_json
from audit_ledger.client.events import format_occurred_at as format_occurred_at
from audit_ledger.client.events import to_json_value as to_json_value
from audit_ledger.client.idempotency import EVENT_ID_NAMESPACE, derive_event_id
from audit_ledger.client.outbox import FlushReport, Outbox, PoisonedEvent
from audit_ledger.client.transport import RETRY_STATUSES as RETRY_STATUSES
from audit_ledger.client.transport import parse_retry_after as parse_retry_after

__all__ = [
    "DEFAULT_CATEGORY_RULES",
    "EVENT_ID_NAMESPACE",
    "AuditLedgerClient",
    "AuthError",
    "ClientError",
    "ConflictError",
    "FlushReport",
    "ForbiddenError",
    "InvalidEventError",
    "NotFoundError",
    "Outbox",
    "PayloadTooLargeError",
    "PoisonedEvent",
    "Receipt",
    "ServerError",
    "ServerUnavailable",
    "ServerUnavailableError",
    "UnknownEventTypeError",
    "category_for",
    "correlation_id_var",
    "derive_event_id",
]
