"""The client itself: :class:`AuditLedgerClient`, one method per call of the API v1 (DESIGN §4).

Appends (``log_compliance_event``, ``submit``, ``submit_batch``) for the bot and other writers;
reads (checkpoint, leaves, proofs, entries, search) for officers and the auditor's HTTP log
source. Event shaping lives in :mod:`~audit_ledger.client.events`, retries in
:mod:`~audit_ledger.client.transport`, the typed errors in :mod:`~audit_ledger.client.errors`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self

import httpx

from audit_ledger.client.errors import (
    ClientError,
    InvalidEventError,
    ServerError,
    error_from_response,
)
from audit_ledger.client.events import (
    DEFAULT_CATEGORY_RULES,
    Receipt,
    build_event,
    category_for,
    dumps,
    encode_json,
    to_json_value,
)
from audit_ledger.client.idempotency import EVENT_ID_NAMESPACE, IdempotencyKey
from audit_ledger.client.transport import (
    backoff_delay,
    open_session,
    response_json,
    response_object,
    send_with_retries,
)

__all__ = ["DEFAULT_BATCH_SIZE", "AuditLedgerClient"]

#: The server's largest batch by default (``AUDIT_LEDGER_MAX_BATCH_EVENTS``).
DEFAULT_BATCH_SIZE: Final = 1000
_HASH_HEX = re.compile(r"[0-9a-f]{64}")
_log = logging.getLogger("audit_ledger.client")


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
        idempotency_namespace: uuid.UUID = EVENT_ID_NAMESPACE,
        require_idempotency_key: bool = False,
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
        self.idempotency_namespace = idempotency_namespace
        self.require_idempotency_key = require_idempotency_key
        self._warned_types: set[str] = set()
        self._sleep = sleep or asyncio.sleep
        self._http = open_session(self.base_url, token, timeout=timeout, transport=transport)

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
        idempotency_key: IdempotencyKey | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The event dict :meth:`log_compliance_event` would send (for :meth:`submit_batch`
        or an :class:`~audit_ledger.client.outbox.Outbox`).

        Fills ``category`` from the event type, ``event_id``, ``occurred_at`` (now, UTC) and
        ``correlation_id`` (:data:`correlation_id_var`, else a fresh uuid4 hex); ``fields``
        become ``data``, checked and converted by :func:`to_json_value`.

        Pass ``idempotency_key`` (the Telegram ``update_id``, the gateway's invoice id): the
        ``event_id`` is then derived from it and the event type
        (:func:`~audit_ledger.client.idempotency.derive_event_id`), so a redelivered update is
        a replay instead of a second entry; ``occurred_at`` must then be given too. Without a
        key or an ``event_id`` a random id is made (and a warning logged once per event type,
        or :class:`InvalidEventError` with ``require_idempotency_key=True``).
        """
        if idempotency_key is None and event_id is None:
            self._no_key(event_type)
        return build_event(
            event_type,
            categorize=self.category_for,
            category=category,
            correlation_id=correlation_id,
            occurred_at=occurred_at,
            event_id=event_id,
            fields=fields,
            idempotency_key=idempotency_key,
            namespace=self.idempotency_namespace,
        )

    def _no_key(self, event_type: str) -> None:
        if self.require_idempotency_key:
            raise InvalidEventError(
                "an idempotency key is required by this client",
                [{"field": "idempotency_key", "problem": "missing (or pass event_id)"}],
            )
        if event_type not in self._warned_types:
            self._warned_types.add(event_type)
            _log.warning(
                "audit-ledger client: %s logged without idempotency_key: a random event_id "
                "cannot deduplicate a redelivered update (pass idempotency_key=update_id or "
                "the invoice id)",
                event_type,
            )

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
        idempotency_key: IdempotencyKey | None = None,
        **fields: Any,
    ) -> Receipt:
        """Record one compliance event (the observability plan's ``log_compliance_event``).

        ``fields`` are the category's data fields, e.g. for ``payment_completed``:
        ``user_id``, ``amount`` (int IDR or Decimal, never float), ``payment_method``,
        ``order_id``. The plan's ``timestamp`` is ``occurred_at``. Raises
        :class:`UnknownEventTypeError` for an unmapped type without ``category=`` and
        :class:`InvalidEventError` for floats or other unsendable values, before any I/O.
        Pass ``idempotency_key`` (see :meth:`build_event`): retries and redeliveries then
        land exactly once.
        """
        event = self.build_event(
            event_type,
            category=category,
            correlation_id=correlation_id,
            occurred_at=occurred_at,
            event_id=event_id,
            idempotency_key=idempotency_key,
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
            raise error_from_response(response)
        return Receipt.from_json(response_json(response), replayed=response.status_code == 200)

    async def submit_batch(self, events: Sequence[Mapping[str, Any]]) -> list[Receipt]:
        """Append many events in chunks of ``batch_size`` (``POST /v1/events/batch``).

        Each chunk is all-or-nothing on the server and committed in order. If a chunk fails,
        the chunks before it stay committed; resending the whole list is safe (they replay).
        Error field names use indexes into ``events``.
        """
        # Check and encode everything first: a bad event fails before anything is sent.
        checked = [to_json_value(event, f"$.events[{i}]") for i, event in enumerate(events)]
        bodies = [
            dumps({"events": checked[start : start + self.batch_size]})
            for start in range(0, len(checked), self.batch_size)
        ]
        receipts: list[Receipt] = []
        for n, body in enumerate(bodies):
            offset = n * self.batch_size
            response = await self._send("POST", "/v1/events/batch", content=body)
            if response.status_code not in {200, 201}:
                raise error_from_response(response, offset)
            raw = response_json(response)
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
            raise error_from_response(response)
        return response.text

    async def verifier_key(self) -> str:
        """The checkpoint verifier key (``<name>+<hash>+<key>``, Go ``sumdb/note`` format)."""
        response = await self._send("GET", "/v1/log/verifier-key")
        if response.status_code != 200:
            raise error_from_response(response)
        return response.text.strip()

    async def get_leaves(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """Leaf bytes ``(seq, leaf)`` from ``start`` on, below ``end`` (``GET /v1/log/leaves``;
        the server returns at most 1,000 per call: continue from the last seq + 1)."""
        response = await self._send("GET", f"/v1/log/leaves?start={int(start)}&end={int(end)}")
        if response.status_code != 200:
            raise error_from_response(response)
        items = response_object(response).get("leaves")
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
            raise error_from_response(response)
        hashes = response_object(response).get("hashes")
        if not isinstance(hashes, list) or not all(
            isinstance(h, str) and _HASH_HEX.fullmatch(h) for h in hashes
        ):
            raise ServerError("the server returned a malformed proof")
        return [bytes.fromhex(h) for h in hashes]

    async def get_event(self, seq: int) -> dict[str, Any]:
        """One entry (``GET /v1/events/{seq}``): header, payload state and, if allowed, data."""
        response = await self._send("GET", f"/v1/events/{int(seq)}")
        if response.status_code != 200:
            raise error_from_response(response)
        return response_object(response)

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
            raise error_from_response(response)
        return response_object(response)

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
        return backoff_delay(
            attempt,
            retry_after,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
            max_retry_after=self.max_retry_after,
        )

    async def _send(
        self, method: str, path: str, *, content: bytes | None = None
    ) -> httpx.Response:
        """Send the same request until it gets a non-transient answer or retries run out."""
        return await send_with_retries(
            self._http,
            method,
            path,
            content=content,
            max_retries=self.max_retries,
            delay=self._delay,
            sleep=self._sleep,
        )
