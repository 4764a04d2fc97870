"""The HTTP session and the retry policy: capped exponential backoff with jitter, honouring
``Retry-After``.

Retrying is safe because a request body is encoded once and the very same bytes are resent:
the ledger's idempotency key (``event_id``) is inside them, so an event the server had already
committed is replayed (200 and the original receipt), never duplicated. Only answers that carry
no decision about the request are retried (connection errors, timeouts, 429, 502/503/504).
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from audit_ledger.client.errors import ServerError, ServerUnavailableError

__all__ = [
    "RETRY_STATUSES",
    "USER_AGENT",
    "backoff_delay",
    "open_session",
    "parse_retry_after",
    "response_json",
    "response_object",
    "send_with_retries",
]

#: Statuses worth retrying: the request never reached a decision (or we are asked to slow down).
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
USER_AGENT: Final = "audit-ledger-client/1"


def open_session(
    base_url: str, token: str, *, timeout: float, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    """The connection pool, authenticated by ``token``."""
    # The token lives only inside the httpx client's headers (which httpx masks in reprs).
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT},
        timeout=httpx.Timeout(timeout),
        transport=transport,
    )


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


def backoff_delay(
    attempt: int,
    retry_after: float | None,
    *,
    backoff: float,
    max_backoff: float,
    max_retry_after: float,
) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): the server's ``Retry-After`` capped
    at ``max_retry_after``, else ``backoff * 2**attempt`` capped at ``max_backoff``, of which a
    random half is jitter."""
    if retry_after is not None:
        return min(retry_after, max_retry_after)
    ceiling = min(max_backoff, backoff * 2.0 ** min(attempt, 64))
    # Equal jitter: at least half the ceiling, so concurrent writers spread out after an
    # outage without any of them hammering the server. Not security-relevant randomness.
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311


async def send_with_retries(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    content: bytes | None,
    max_retries: int,
    delay: Callable[[int, float | None], float],
    sleep: Callable[[float], Awaitable[None]],
) -> httpx.Response:
    """Send the same request until it gets a non-transient answer or retries run out.

    ``delay(attempt, retry_after)`` gives the wait before each retry; after ``max_retries``
    retries, :class:`ServerUnavailableError`.
    """
    headers = {"Content-Type": "application/json"} if content is not None else None
    attempt = 0
    while True:
        retry_after: float | None = None
        status: int | None = None
        try:
            response = await http.request(method, path, content=content, headers=headers)
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
        if attempt >= max_retries:
            raise ServerUnavailableError(
                f"{method} {path} failed after {attempt + 1} attempts (last: {last}); "
                "resending the same events later is safe",
                status=status,
            )
        await sleep(delay(attempt, retry_after))
        attempt += 1


def response_json(response: httpx.Response) -> object:
    """The decoded JSON body; :class:`ServerError` if the body is not JSON."""
    try:
        return response.json()
    except ValueError:
        raise ServerError(f"HTTP {response.status_code}: response is not JSON") from None


def response_object(response: httpx.Response) -> dict[str, Any]:
    """The decoded JSON body; :class:`ServerError` unless it is a JSON object."""
    raw = response_json(response)
    if not isinstance(raw, dict):
        raise ServerError(f"HTTP {response.status_code}: response is not a JSON object")
    return raw
