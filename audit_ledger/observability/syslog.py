"""Forward chosen log tiers to a SIEM as RFC 5424 syslog over TCP (RFC 6587) or TLS (RFC 5425).

The forwarder is a :class:`logging.Handler` on the root logger. What it sends is the very JSON
line the tier files get (the same formatter, so the same redaction: fields are chosen one by
one, never a payload field, raw identifier or token); only the syslog header is added.

It never blocks or slows the caller (an append, a request): :meth:`SyslogForwarder.emit` only
appends ``(time, severity, tier, line)`` to a bounded in-memory buffer; a background thread
builds the frames and sends them, reconnecting with capped exponential backoff. A record that
finds the buffer full is dropped and counted — the tier files still have it. A record leaves
the buffer only once the socket took it, so a receiver that goes away loses nothing while the
buffer has room (delivery is at least once: a batch cut by a broken connection is resent).

Metrics: ``ledger_syslog_messages_sent_total``, ``ledger_syslog_messages_dropped_total`` and
``ledger_syslog_messages_queued``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections import deque
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

from prometheus_client import Counter, Gauge

from audit_ledger.observability.syslog_config import (
    DEFAULT_TIERS,
    TIER_LOGGERS,
    SyslogTarget,
    parse_syslog_url,
    parse_tiers,
)

__all__ = [
    "DEFAULT_TIERS",
    "SyslogForwarder",
    "SyslogTarget",
    "frame",
    "install_forwarder",
    "parse_syslog_url",
    "parse_tiers",
    "rfc5424",
]

SENT = Counter("ledger_syslog_messages_sent_total", "Log lines handed to the syslog receiver.")
DROPPED = Counter(
    "ledger_syslog_messages_dropped_total",
    "Log lines not forwarded because the forwarding buffer was full.",
)
QUEUED = Gauge(
    "ledger_syslog_messages_queued",
    "Log lines waiting to be forwarded.",
    multiprocess_mode="livesum",
)

#: RFC 5424 §6.2.1: facility 13 is "log audit".
FACILITY_LOG_AUDIT = 13
APP_NAME = "audit-ledger"
_MAX_BATCH = 512
_BACKOFF_FIRST, _BACKOFF_CAP = 0.1, 5.0


def _severity(levelno: int) -> int:
    """RFC 5424 §6.2.1 severities: 2 critical, 3 error, 4 warning, 6 informational, 7 debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    return 6 if levelno >= logging.INFO else 7


def _timestamp(created: float) -> str:
    # RFC 5424 §6.2.3: RFC 3339 with at most 6 fractional digits; UTC as "Z".
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _printable(text: str, limit: int) -> str:
    # RFC 5424 §6: header fields are PRINTUSASCII (33..126), NILVALUE "-" when empty.
    clean = "".join(ch for ch in text if 33 <= ord(ch) <= 126)[:limit]
    return clean or "-"


def rfc5424(
    *, created: float, severity: int, hostname: str, procid: int, msgid: str, message: str
) -> bytes:
    """One RFC 5424 message: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG``.

    No structured data (``-``): the message is the JSON line, which already carries
    ``service`` and ``environment``. It is ASCII (the JSON renderer escapes the rest), so it
    is MSG-ANY and needs no BOM (§6.4).
    """
    pri = FACILITY_LOG_AUDIT * 8 + severity
    header = (
        f"<{pri}>1 {_timestamp(created)} {_printable(hostname, 255)} {APP_NAME} "
        f"{procid} {_printable(msgid, 32)} - "
    )
    return header.encode("ascii") + message.encode("utf-8")


def frame(message: bytes) -> bytes:
    """RFC 6587 §3.4.1 octet counting (also RFC 5425 §4.3): ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d %s" % (len(message), message)


class _TierFilter(logging.Filter):
    """Pass the records of the chosen tiers (each at most once, however many match)."""

    def __init__(self, tiers: frozenset[str]) -> None:
        super().__init__()
        self.errors = "error" in tiers
        self.prefixes = tuple(
            (TIER_LOGGERS[t], TIER_LOGGERS[t] + ".") for t in tiers if TIER_LOGGERS[t]
        )

    def filter(self, record: logging.LogRecord) -> bool:
        if self.errors and record.levelno >= logging.ERROR:
            return True
        name = record.name
        return any(name == exact or name.startswith(child) for exact, child in self.prefixes)


def _msgid(name: str) -> str:
    """The tier a logger name belongs to (``audit_ledger.security.x`` → ``security``)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "audit_ledger" else "other"


class SyslogForwarder(logging.Handler):
    """A logging handler that forwards records to a syslog receiver from a background thread."""

    def __init__(
        self,
        target: SyslogTarget,
        *,
        tiers: frozenset[str],
        capacity: int = 10_000,
        ca_file: Path | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__(logging.DEBUG)
        self.target = target
        self.capacity = capacity
        self.connect_timeout = connect_timeout
        self.addFilter(_TierFilter(tiers))
        self._tls = self._tls_context(ca_file) if target.tls else None
        self._hostname = socket.gethostname()
        self._buffer: deque[tuple[float, int, str, str]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="syslog-forwarder", daemon=True)
        self._thread.start()

    @staticmethod
    def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
        # RFC 5425 §5.2: the client authenticates the server's certificate (and its name).
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    # --- the caller's side: never blocks on the network -------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)
            return
        item = (record.created, _severity(record.levelno), _msgid(record.name), line)
        with self._cond:
            if len(self._buffer) >= self.capacity:
                DROPPED.inc()
                return
            self._buffer.append(item)
            QUEUED.inc()
            self._cond.notify()

    def queued(self) -> int:
        with self._cond:
            return len(self._buffer)

    def flush(self, timeout: float = 1.0) -> bool:  # type: ignore[override]
        """Wait up to ``timeout`` seconds for the buffer to empty; True if it did. (Called
        without arguments by ``logging.shutdown`` at exit: a receiver that is down must not hold
        up a process's exit for long.)"""
        deadline = time.monotonic() + timeout
        while self.queued():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Stop the sender after a short drain (at most one second): shutdown must not hang
        on an unreachable receiver."""
        self.flush(timeout=1.0)
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout=2.0)
        self._disconnect()
        super().close()

    # --- the sender thread ------------------------------------------------------------------

    def _run(self) -> None:
        backoff = _BACKOFF_FIRST
        while True:
            with self._cond:
                while not self._buffer and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                # Peek, do not pop: a record leaves the buffer only once the socket took it.
                batch = list(islice(self._buffer, _MAX_BATCH))
            pid = os.getpid()
            data = b"".join(
                frame(
                    rfc5424(
                        created=created,
                        severity=severity,
                        hostname=self._hostname,
                        procid=pid,
                        msgid=msgid,
                        message=line,
                    )
                )
                for created, severity, msgid, line in batch
            )
            try:
                self._send(data)
            except OSError:
                self._disconnect()
                with self._cond:
                    self._cond.wait(timeout=backoff)
                backoff = min(backoff * 2, _BACKOFF_CAP)
                continue
            backoff = _BACKOFF_FIRST
            with self._cond:
                for _ in batch:
                    self._buffer.popleft()
            SENT.inc(len(batch))
            QUEUED.dec(len(batch))

    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is not None and _peer_closed(sock):
            # A receiver that went away while we were idle: TCP would still accept our next
            # write into the kernel buffer and lose it; reconnect first.
            self._disconnect()
            sock = None
        if sock is None:
            sock = self._connect()
        sock.sendall(data)

    def _connect(self) -> socket.socket:
        raw = socket.create_connection(
            (self.target.host, self.target.port), timeout=self.connect_timeout
        )
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock: socket.socket = raw
            if self._tls is not None:
                sock = self._tls.wrap_socket(raw, server_hostname=self.target.host)
            # Sends may block (a slow receiver): only this thread waits, bounded.
            sock.settimeout(30.0)
        except BaseException:
            raw.close()
            raise
        self._sock = sock
        return sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def _peer_closed(sock: socket.socket) -> bool:
    """A syslog receiver never writes to us: readable means EOF, a reset or a TLS alert."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    if not readable:
        return False
    try:
        sock.setblocking(False)
        try:
            sock.recv(1)  # b"" (EOF) or unexpected data: either way, start a fresh session
        finally:
            sock.settimeout(30.0)
    except ssl.SSLWantReadError:
        return False  # TLS bookkeeping (e.g. a TLS 1.3 session ticket), no application data
    except (OSError, ValueError):
        pass
    return True


def install_forwarder(
    url: str,
    *,
    tiers: str = DEFAULT_TIERS,
    ca_file: Path | None = None,
    capacity: int = 10_000,
    formatter: logging.Formatter | None = None,
) -> SyslogForwarder:
    """Attach a forwarder to the root logger (replacing an earlier one) and return it."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, SyslogForwarder):
            root.removeHandler(handler)
            handler.close()
    forwarder = SyslogForwarder(
        parse_syslog_url(url), tiers=parse_tiers(tiers), capacity=capacity, ca_file=ca_file
    )
    if formatter is not None:
        forwarder.setFormatter(formatter)
    forwarder._audit_ledger = True  # type: ignore[attr-defined]  # replaced by configure_logging
    root.addHandler(forwarder)
    return forwarder
