"""Async HTTP client for the audit-ledger API v1 (DESIGN §4), for the bot and other writers.

The QuickCart observability plan (§5) asks for ``log_compliance_event(event_type, ...)``; this
is that call, backed by the ledger instead of a plain table::

    async with AuditLedgerClient("http://ledger.internal:8000", token) as ledger:
        receipt = await ledger.log_compliance_event(
            "payment_completed", user_id=4242, amount=Decimal("150000.00"),
            payment_method="qris", order_id="ORD-1",
        )

Retries are safe because ``event_id`` is the ledger's idempotency key: an event is built (and
encoded to bytes) once, and exactly those bytes are resent until the server acknowledges them.
A retry of an event the server had already committed gets 200 and the original receipt, so every
event lands exactly once. Transient failures (connection errors, timeouts, 502/503/504, 429) are
retried with capped exponential backoff and jitter, honouring ``Retry-After``; a 4xx is a
decision about the request, never retried, and raised as a typed :class:`ClientError`.

The module depends on ``httpx`` and the standard library only (plus the package's error base),
so writers need none of the server's database or crypto stack at run time. Tokens never appear
in ``repr`` or in exception messages; problem details from the server never echo submitted
values, and neither do the local checks here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import random
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, Self

import httpx

from audit_ledger.errors import AuditLedgerError

__all__ = [
    "DEFAULT_CATEGORY_RULES",
    "AuditLedgerClient",
    "AuthError",
    "ClientError",
    "ConflictError",
    "ForbiddenError",
    "InvalidEventError",
    "NotFoundError",
    "PayloadTooLargeError",
    "Receipt",
    "ServerError",
    "ServerUnavailable",
    "ServerUnavailableError",
    "UnknownEventTypeError",
    "category_for",
    "correlation_id_var",
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

#: Statuses worth retrying: the request never reached a decision (or we are asked to slow down).
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
#: The server's largest batch by default (``AUDIT_LEDGER_MAX_BATCH_EVENTS``).
DEFAULT_BATCH_SIZE: Final = 1000
#: Integers beyond this lose precision in IEEE-754 readers; the server refuses them (I-JSON).
MAX_SAFE_INTEGER: Final = 2**53 - 1
_BATCH_INDEX = re.compile(r"events\[(\d+)\]")
_HASH_HEX = re.compile(r"[0-9a-f]{64}")
_USER_AGENT = "audit-ledger-client/1"


# --- errors -------------------------------------------------------------------------------------


class ClientError(AuditLedgerError):
    """Base of the client's errors.

    ``status`` is the HTTP status (None for errors raised before or without a response),
    ``problem_type`` the problem+json ``type`` and ``detail`` its human detail. Messages never
    contain the token or submitted values.
    """

    def __init__(
        self, message: str, *, status: int | None = None, problem_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.problem_type = problem_type
        self.detail = message


class AuthError(ClientError):
    """401: the token is missing, unknown, malformed or revoked."""


class ForbiddenError(AuthError):
    """403: the token is valid but its roles do not allow this (e.g. a writer token reading)."""


class InvalidEventError(ClientError):
    """The event (or request) is invalid: a 422 from the server, or refused locally.

    ``errors`` lists ``{"field": ..., "problem": ...}`` items naming the failing fields (batch
    fields are ``events[i]...``, with ``i`` the index in the list given to ``submit_batch``).
    """

    def __init__(
        self,
        message: str,
        errors: Sequence[Mapping[str, str]] = (),
        *,
        status: int | None = None,
        problem_type: str | None = None,
    ) -> None:
        self.errors: list[dict[str, str]] = [dict(e) for e in errors]
        if self.errors:
            named = ", ".join(f"{e.get('field', '?')} ({e.get('problem', '?')})" for e in errors)
            message = f"{message}: {named}"
        super().__init__(message, status=status, problem_type=problem_type)

    @property
    def fields(self) -> list[str]:
        """The names of the failing fields."""
        return [e.get("field", "") for e in self.errors]


class UnknownEventTypeError(InvalidEventError):
    """No category rule matches the event type and no ``category=`` was given."""


class ConflictError(ClientError):
    """409: the ``event_id`` is already in the ledger with different content. Never retried."""


class NotFoundError(ClientError):
    """404: the entry (or checkpoint) does not exist."""


class PayloadTooLargeError(ClientError):
    """413: the body or batch is over the server's limit (lower ``batch_size``)."""


class ServerError(ClientError):
    """An unexpected answer: a 500, or a response that is not the documented shape."""


class ServerUnavailableError(ClientError):
    """The server stayed unreachable or overloaded through every retry.

    Resending the same events later is safe: those that did land are replayed, not duplicated.
    """


#: The name used in the design notes; the class carries the ``Error`` suffix for linters.
ServerUnavailable = ServerUnavailableError


# --- receipts and pure helpers ------------------------------------------------------------------


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
    return _dumps(to_json_value(value))


def _dumps(checked: object) -> bytes:
    return json.dumps(checked, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def _local(path: str, problem: str) -> InvalidEventError:
    field = path[2:] if path.startswith("$.") else path
    return InvalidEventError("event refused before sending", [{"field": field, "problem": problem}])


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _shift(text: str, offset: int) -> str:
    """Renumber ``events[i]`` of one chunk to the index in the caller's whole list."""
    if offset == 0:
        return text
    return _BATCH_INDEX.sub(lambda m: f"events[{int(m.group(1)) + offset}]", text)


def _error_from_response(response: httpx.Response, offset: int = 0) -> ClientError:
    """The typed error for a non-success response (problem+json per RFC 9457)."""
    status = response.status_code
    body: object = None
    try:
        body = response.json()
    except ValueError:
        body = None
    problem: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    detail = problem.get("detail")
    text = _shift(detail, offset) if isinstance(detail, str) else response.reason_phrase
    ptype = problem.get("type") if isinstance(problem.get("type"), str) else None
    message = f"HTTP {status}: {text}"
    if status == 401:
        return AuthError(message, status=status, problem_type=ptype)
    if status == 403:
        return ForbiddenError(message, status=status, problem_type=ptype)
    if status == 404:
        return NotFoundError(message, status=status, problem_type=ptype)
    if status == 409:
        return ConflictError(message, status=status, problem_type=ptype)
    if status == 413:
        return PayloadTooLargeError(message, status=status, problem_type=ptype)
    if status in {400, 422}:
        raw_errors = problem.get("errors")
        errors = [
            {
                "field": _shift(str(e.get("field", "")), offset),
                "problem": str(e.get("problem", "")),
            }
            for e in (raw_errors if isinstance(raw_errors, list) else [])
            if isinstance(e, Mapping)
        ]
        return InvalidEventError(message, errors, status=status, problem_type=ptype)
    if status >= 500:
        return ServerError(message, status=status, problem_type=ptype)
    return ClientError(message, status=status, problem_type=ptype)


# --- the client ---------------------------------------------------------------------------------


class AuditLedgerClient:
    """Async client of one audit-ledger server, authenticated by one bearer token.

    ``max_retries`` is the number of retries after the first attempt of each request; the wait
    before retry *n* (0-based) is ``backoff * 2**n`` capped at ``max_backoff``, of which a random
    half is jitter, or the server's ``Retry-After`` (capped at ``max_retry_after``). ``transport``
    and ``sleep`` exist for tests. Use as an async context manager, or call :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        max_retry_after: float = 60.0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        category_rules: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if not token or any(c.isspace() for c in token):
            raise ClientError("token must be a non-empty string without whitespace")
        if max_retries < 0 or backoff < 0 or max_backoff < 0 or max_retry_after < 0:
            raise ClientError("max_retries, backoff, max_backoff and max_retry_after must be >= 0")
        if batch_size < 1:
            raise ClientError("batch_size must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.batch_size = batch_size
        self.category_rules: tuple[tuple[str, str], ...] = (
            *(category_rules or {}).items(),
            *DEFAULT_CATEGORY_RULES,
        )
        self._sleep = sleep or asyncio.sleep
        # The token lives only inside the httpx client's headers (which httpx masks in reprs).
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": _USER_AGENT},
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- building events ---------------------------------------------------------------------

    def category_for(self, event_type: str) -> str:
        """The category of ``event_type`` under this client's rules (custom rules first)."""
        return category_for(event_type, self.category_rules)

    def build_event(
        self,
        event_type: str,
        /,
        *,
        category: str | None = None,
        correlation_id: str | None = None,
        occurred_at: datetime | str | None = None,
        event_id: str | uuid.UUID | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The event dict :meth:`log_compliance_event` would send (for :meth:`submit_batch`).

        Fills ``category`` from the event type, ``event_id`` (uuid4), ``occurred_at`` (now, UTC)
        and ``correlation_id`` (:data:`correlation_id_var`, else a fresh uuid4 hex); ``fields``
        become ``data``, checked and converted by :func:`to_json_value`.
        """
        when = occurred_at if occurred_at is not None else datetime.now(UTC)
        return {
            "event_id": str(event_id) if event_id is not None else str(uuid.uuid4()),
            "category": category or self.category_for(event_type),
            "event_type": event_type,
            "occurred_at": format_occurred_at(when) if isinstance(when, datetime) else when,
            "correlation_id": correlation_id or correlation_id_var.get() or uuid.uuid4().hex,
            "data": to_json_value(fields, "$.data"),
        }

    # -- appending ---------------------------------------------------------------------------

    async def log_compliance_event(
        self,
        event_type: str,
        /,
        *,
        category: str | None = None,
        correlation_id: str | None = None,
        occurred_at: datetime | str | None = None,
        event_id: str | uuid.UUID | None = None,
        **fields: Any,
    ) -> Receipt:
        """Record one compliance event (the observability plan's ``log_compliance_event``).

        ``fields`` are the category's data fields, e.g. for ``payment_completed``:
        ``user_id``, ``amount`` (int IDR or Decimal, never float), ``payment_method``,
        ``order_id``. The plan's ``timestamp`` is ``occurred_at``. Raises
        :class:`UnknownEventTypeError` for an unmapped type without ``category=`` and
        :class:`InvalidEventError` for floats or other unsendable values, before any I/O.
        """
        event = self.build_event(
            event_type,
            category=category,
            correlation_id=correlation_id,
            occurred_at=occurred_at,
            event_id=event_id,
            **fields,
        )
        return await self.submit(event)

    async def submit(self, event: Mapping[str, Any]) -> Receipt:
        """Append one complete event dict (``POST /v1/events``), retrying transient failures.

        The dict is sent as given (Decimal converted, floats refused); the server validates it
        against the category policy. 201 → a new receipt, 200 → ``replayed=True``.
        """
        body = encode_json(event)
        response = await self._send("POST", "/v1/events", content=body)
        if response.status_code not in {200, 201}:
            raise _error_from_response(response)
        return Receipt.from_json(_json(response), replayed=response.status_code == 200)

    async def submit_batch(self, events: Sequence[Mapping[str, Any]]) -> list[Receipt]:
        """Append many events in chunks of ``batch_size`` (``POST /v1/events/batch``).

        Each chunk is all-or-nothing on the server and committed in order. If a chunk fails,
        the chunks before it stay committed; resending the whole list is safe (they replay).
        Error field names use indexes into ``events``.
        """
        # Check and encode everything first: a bad event fails before anything is sent.
        checked = [to_json_value(event, f"$.events[{i}]") for i, event in enumerate(events)]
        bodies = [
            _dumps({"events": checked[start : start + self.batch_size]})
            for start in range(0, len(checked), self.batch_size)
        ]
        receipts: list[Receipt] = []
        for n, body in enumerate(bodies):
            offset = n * self.batch_size
            response = await self._send("POST", "/v1/events/batch", content=body)
            if response.status_code not in {200, 201}:
                raise _error_from_response(response, offset)
            raw = _json(response)
            items = raw.get("receipts") if isinstance(raw, Mapping) else None
            expected = min(self.batch_size, len(events) - offset)
            if not isinstance(items, list) or len(items) != expected:
                raise ServerError("the server returned a malformed batch answer")
            replayed = response.status_code == 200
            receipts.extend(Receipt.from_json(item, replayed=replayed) for item in items)
        return receipts

    # -- reads (officers, auditors) ----------------------------------------------------------

    async def get_checkpoint(self) -> str | None:
        """The latest signed checkpoint (signed-note text), or None before the first one."""
        response = await self._send("GET", "/v1/log/checkpoint")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _error_from_response(response)
        return response.text

    async def verifier_key(self) -> str:
        """The checkpoint verifier key (``<name>+<hash>+<key>``, Go ``sumdb/note`` format)."""
        response = await self._send("GET", "/v1/log/verifier-key")
        if response.status_code != 200:
            raise _error_from_response(response)
        return response.text.strip()

    async def get_leaves(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """Leaf bytes ``(seq, leaf)`` from ``start`` on, below ``end`` (``GET /v1/log/leaves``;
        the server returns at most 1,000 per call: continue from the last seq + 1)."""
        response = await self._send("GET", f"/v1/log/leaves?start={int(start)}&end={int(end)}")
        if response.status_code != 200:
            raise _error_from_response(response)
        items = _object(response).get("leaves")
        if not isinstance(items, list):
            raise ServerError("the server returned a malformed leaves page")
        leaves: list[tuple[int, bytes]] = []
        for item in items:
            seq = item.get("seq") if isinstance(item, dict) else None
            leaf = item.get("leaf") if isinstance(item, dict) else None
            if type(seq) is not int or not isinstance(leaf, str):
                raise ServerError("the server returned a malformed leaf")
            try:
                leaves.append((seq, base64.b64decode(leaf, validate=True)))
            except binascii.Error:
                raise ServerError("the server returned a leaf that is not base64") from None
        return leaves

    async def inclusion_proof(self, seq: int, tree_size: int) -> list[bytes]:
        """The RFC 9162 inclusion proof of entry ``seq`` in the tree of ``tree_size`` leaves."""
        query = f"seq={int(seq)}&tree_size={int(tree_size)}"
        return await self._proof(f"/v1/log/proof/inclusion?{query}")

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """The RFC 9162 consistency proof between the trees of ``first`` and ``second`` leaves."""
        query = f"first={int(first)}&second={int(second)}"
        return await self._proof(f"/v1/log/proof/consistency?{query}")

    async def _proof(self, path: str) -> list[bytes]:
        response = await self._send("GET", path)
        if response.status_code != 200:
            raise _error_from_response(response)
        hashes = _object(response).get("hashes")
        if not isinstance(hashes, list) or not all(
            isinstance(h, str) and _HASH_HEX.fullmatch(h) for h in hashes
        ):
            raise ServerError("the server returned a malformed proof")
        return [bytes.fromhex(h) for h in hashes]

    async def get_event(self, seq: int) -> dict[str, Any]:
        """One entry (``GET /v1/events/{seq}``): header, payload state and, if allowed, data."""
        response = await self._send("GET", f"/v1/events/{int(seq)}")
        if response.status_code != 200:
            raise _error_from_response(response)
        return _object(response)

    async def search(
        self,
        *,
        category: str | None = None,
        event_type: str | None = None,
        since: str | None = None,
        until: str | None = None,
        user_id: str | int | None = None,
        order_id: str | int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of ``POST /v1/events/search`` (identifiers travel in the body, never a URL):
        ``{"events": [...], "next_cursor": ...}``."""
        filters = {
            "category": category,
            "event_type": event_type,
            "since": since,
            "until": until,
            "user_id": user_id,
            "order_id": order_id,
            "limit": limit,
            "cursor": cursor,
        }
        body = encode_json({k: v for k, v in filters.items() if v is not None})
        response = await self._send("POST", "/v1/events/search", content=body)
        if response.status_code != 200:
            raise _error_from_response(response)
        return _object(response)

    async def iter_events(
        self,
        *,
        category: str | None = None,
        event_type: str | None = None,
        since: str | None = None,
        until: str | None = None,
        user_id: str | int | None = None,
        order_id: str | int | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every matching entry, following ``next_cursor`` page by page."""
        cursor: str | None = None
        while True:
            page = await self.search(
                category=category,
                event_type=event_type,
                since=since,
                until=until,
                user_id=user_id,
                order_id=order_id,
                limit=page_size,
                cursor=cursor,
            )
            events = page.get("events")
            if not isinstance(events, list):
                raise ServerError("the server returned a malformed page")
            for entry in events:
                yield entry
            next_cursor = page.get("next_cursor")
            if not isinstance(next_cursor, str):
                return
            cursor = next_cursor

    # -- transport with retries --------------------------------------------------------------

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** min(attempt, 64))
        # Equal jitter: at least half the ceiling, so concurrent writers spread out after an
        # outage without any of them hammering the server. Not security-relevant randomness.
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311

    async def _send(
        self, method: str, path: str, *, content: bytes | None = None
    ) -> httpx.Response:
        """Send the same request until it gets a non-transient answer or retries run out."""
        headers = {"Content-Type": "application/json"} if content is not None else None
        attempt = 0
        while True:
            retry_after: float | None = None
            status: int | None = None
            try:
                response = await self._http.request(method, path, content=content, headers=headers)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                # The request may or may not have been processed; resending is safe because the
                # body (and so its event_id) is byte-for-byte the same.
                last = type(exc).__name__
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                status = response.status_code
                last = f"HTTP {status}"
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            if attempt >= self.max_retries:
                raise ServerUnavailableError(
                    f"{method} {path} failed after {attempt + 1} attempts (last: {last}); "
                    "resending the same events later is safe",
                    status=status,
                )
            await self._sleep(self._delay(attempt, retry_after))
            attempt += 1


def _json(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        raise ServerError(f"HTTP {response.status_code}: response is not JSON") from None


def _object(response: httpx.Response) -> dict[str, Any]:
    raw = _json(response)
    if not isinstance(raw, dict):
        raise ServerError(f"HTTP {response.status_code}: response is not a JSON object")
    return raw
