"""uvicorn's httptools protocol with the limits a public server needs (issue #12).

``serve`` uses the httptools (llhttp) parser for speed, and with it h11's head size limit was
gone: a 300 MB header line to ``/healthz`` grew a worker by 377 MiB and was answered 200; and
neither parser bounds *time* — a partial head, or a body trickled a byte every 2 s, held its
connection (and descriptor) for ever, until 1,100 of them at a 1,024-descriptor limit made real
appends fail. An ASGI middleware sees a request only once its head is complete, too late for
either, so the limits live here, in the protocol that feeds the parser:

* **head size** — the bytes received for a head are counted as they arrive; past
  ``max_head_bytes`` the connection gets ``431 Request Header Fields Too Large`` and is closed,
  having buffered at most that plus one socket read. More than ``max_headers`` header fields:
  431 too (RFC 6585 §5). A head completed within one read is measured exactly (URL and fields).
* **time** — a head must be complete within ``head_timeout`` seconds of its first byte (or of
  the connection's start), and a body within ``body_timeout`` seconds of its head, with no pause
  longer than ``body_idle_timeout``: else ``408 Request Timeout`` (RFC 9110 §15.5.9) if no
  answer has begun, and the connection is closed. One sweep per worker checks every connection
  each 0.25 s (a timer per request cost more CPU than all the rest of this).
* **connections** — at most ``max_connections`` per worker (kept below the descriptor limit).
  A connection beyond that evicts the oldest one still *waiting for its client* (head or body
  incomplete: a slow client's, or an idle keep-alive one) rather than being refused: requests
  that are fully received are never cut, so real appends keep being served while a slowloris
  holds every slot. Only when no connection is evictable is the new one refused (503, closed).

The answers are minimal problem+json responses written straight to the transport (the app never
saw the request), always with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from audit_ledger.api.problems import PROBLEM_JSON, TYPE_BASE

#: Descriptors kept for everything but client connections (database pool, log files, pipes).
RESERVED_DESCRIPTORS = 100


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_head_bytes: int = 16 * 1024
    max_headers: int = 100
    head_timeout: float = 10.0
    body_idle_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1000


def connection_cap(wanted: int) -> int:
    """``wanted``, lowered to leave :data:`RESERVED_DESCRIPTORS` of this process's descriptor
    limit for everything else: a cap above the limit would let accept() fail instead."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - RESERVED_DESCRIPTORS))


def _answer(status: int, reason: str, slug: str, detail: str) -> bytes:
    body = json.dumps(
        {"type": TYPE_BASE + slug, "title": reason, "status": status, "detail": detail},
        separators=(",", ":"),
    ).encode("ascii")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {PROBLEM_JSON}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


HEAD_TOO_LARGE = _answer(
    431,
    "Request Header Fields Too Large",
    "head-too-large",
    "the request head (line and header fields) is too large or has too many fields",
)
TIMED_OUT = _answer(408, "Request Timeout", "timeout", "the request was not received in time")
TOO_MANY_CONNECTIONS = _answer(
    503, "Service Unavailable", "unavailable", "too many connections; retry later"
)


class _HeadTooLargeError(Exception):
    """Raised from a parser callback; the parser hands it back as the error's context."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with head, time and connection limits (module docstring).

    ``serve`` passes a subclass carrying the configured :class:`HttpLimits` (:func:`protocol`).
    """

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_head = True  # the client owes us a head (or the rest of one)
        self._head_bytes = 0  # bytes received while awaiting the head
        self._head_size = 0  # URL and header fields of the head being parsed, exactly
        self._header_count = 0
        self._waiting_since = 0.0  # since when the client has owed us something
        self._head_since: float | None = None  # when the head being awaited was begun
        self._receiving_body = False
        self._body_deadline = 0.0
        self._body_last = 0.0

    # -- connections -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._waiting_since = self._head_since = self.loop.time()
        if len(self.connections) > self.limits.max_connections and not self._evict_one():
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        _start_sweeping(self.loop, self.connections)

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for its client; False if none."""
        oldest: GuardedHttpToolsProtocol | None = None
        for other in self.connections:
            if (
                other is not self
                and isinstance(other, GuardedHttpToolsProtocol)
                and other._waiting_for_client()
                and (oldest is None or other._waiting_since < oldest._waiting_since)
            ):
                oldest = other
        if oldest is None:
            return False
        oldest._abort(TIMED_OUT)
        return True

    def _waiting_for_client(self) -> bool:
        """Head or body incomplete, or idle between requests — never a request the app holds
        (fully received, its answer not complete yet)."""
        if self.transport.is_closing():
            return False
        if self._receiving_body:
            return True
        return self._awaiting_head and (self.cycle is None or self.cycle.response_complete)

    def connection_lost(self, exc: Exception | None) -> None:
        self._awaiting_head = self._receiving_body = False
        super().connection_lost(exc)

    # -- the head ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._awaiting_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLargeError):
                self._abort(HEAD_TOO_LARGE)
                return
            self._bad_request()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._awaiting_head and self._head_bytes > self.limits.max_head_bytes:
            # Checked after the parser took the read, so a head and body arriving together
            # count only as their head; what is buffered is bounded by the limit plus one read.
            self._abort(HEAD_TOO_LARGE)

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self._awaiting_head = self._receiving_body = False
        self.send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        self._header_count = 0
        if not self._awaiting_head:  # pipelined right behind a body: a head is owed again
            self._awaiting_head = True
        if self._head_since is None:  # else: timed from the connection's start
            self._waiting_since = self._head_since = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.limits.max_head_bytes:
            raise _HeadTooLargeError
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        if (
            self._header_count > self.limits.max_headers
            or self._head_size > self.limits.max_head_bytes
        ):
            raise _HeadTooLargeError
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._head_bytes = 0
        self._head_since = None
        now = self.loop.time()
        self._receiving_body = True
        self._waiting_since = self._body_last = now
        self._body_deadline = now + self.limits.body_timeout
        super().on_headers_complete()

    # -- the body ----------------------------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        self._body_last = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._receiving_body = False
        self._awaiting_head = True  # for the next request on this connection
        super().on_message_complete()

    # -- time -------------------------------------------------------------------------------

    def _check_time(self, now: float) -> None:
        """Called by the worker's sweep (no timer per request: arming and cancelling two
        timers per request cost more CPU than the whole check)."""
        if self.transport.is_closing():
            return
        limits = self.limits
        if self._receiving_body:
            if now >= self._body_deadline or now - self._body_last >= limits.body_idle_timeout:
                self._abort(TIMED_OUT)
        elif (
            self._awaiting_head
            and self._head_since is not None
            and now - self._head_since >= limits.head_timeout
        ):
            # A connection that never sent a byte is simply closed; a partial head gets 408.
            self._abort(TIMED_OUT if self._head_bytes else None)

    def _abort(self, answer: bytes | None) -> None:
        """Answer (unless the app has begun to), close, and tell a waiting app the client left."""
        self._awaiting_head = self._receiving_body = False
        cycle = self.cycle
        started = cycle is not None and cycle.response_started
        if answer is not None and not started:
            self.transport.write(answer)
        if cycle is not None:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


def protocol(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with ``limits``."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


#: How often each worker looks for connections past their time limits (their resolution).
SWEEP_SECONDS = 0.25
_sweeping: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _start_sweeping(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
    """Check every connection's time limits every :data:`SWEEP_SECONDS` on ``loop`` (started
    by the first connection; one sweep per worker's event loop)."""
    if loop in _sweeping:
        return
    _sweeping.add(loop)

    def sweep() -> None:
        if loop.is_closed():
            _sweeping.discard(loop)
            return
        now = loop.time()
        for connection in list(connections):
            if isinstance(connection, GuardedHttpToolsProtocol):
                connection._check_time(now)
        loop.call_later(SWEEP_SECONDS, sweep)

    loop.call_later(SWEEP_SECONDS, sweep)
