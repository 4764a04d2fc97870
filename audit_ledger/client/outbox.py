"""A durable local outbox: events survive the bot's restart and the ledger's downtime.

Without it an event exists only in the bot's memory until the ledger acknowledges it; a ledger
outage longer than the client's retries, or a bot restart, loses it. With it::

    outbox = Outbox("quickcart-outbox.sqlite3")
    asyncio.create_task(outbox.run(ledger))          # the flusher, for the bot's lifetime
    ...
    await outbox.log(ledger, "payment_completed", idempotency_key=invoice_id,
                     occurred_at=paid_at, user_id=..., amount=..., payment_method="qris",
                     order_id=...)                   # durable on disk when it returns

How nothing is lost or duplicated:

* **Durable before it returns.** ``enqueue`` commits the event's exact request bytes to a SQLite
  file (WAL journal, ``synchronous=FULL``: the commit is fsynced) before returning. The file
  holds plaintext events (personal data): it is created mode 0600.
* **Removed only after a receipt.** The flusher sends rows in enqueue order (several per
  ``POST /v1/events/batch`` request, all-or-nothing on the server) with the client's retries and
  backoff, and deletes them only after a 200/201 whose receipts name the same ``event_id``\\ s.
  A bot killed between the server's commit and that delete resends the same bytes after its
  restart; the ledger answers 200 with the original receipt (DESIGN §4), so the event lands
  exactly once. Ids should be deterministic (``idempotency_key``, see
  :mod:`~audit_ledger.client.idempotency`) so that an update redelivered after a restart is the
  same event too; ``enqueue`` of an id already queued with the same bytes is a no-op.
* **Poison messages are moved aside, loudly.** A 409 (the id is in the ledger with other
  content) or a 4xx that refuses the event itself (422, 413, 400) is a decision that no retry
  changes: the row moves to the ``outbox_poison`` table with the status and the server's problem
  (which names fields, never values), an ERROR is logged, and later events go on. A batch
  refused (or failed, 5xx) as a whole is resent one event at a time, so only the bad event is
  set aside. A 5xx is retried on later flushes, and set aside after ``max_attempts``; nothing is
  retried forever and nothing is dropped silently. 401/403 stop the flush (a configuration
  problem): rows stay.
* **Two bot processes may share the file.** Enqueueing is a plain SQLite transaction; flushing
  takes an exclusive ``flock`` on ``<file>.lock`` (released by the kernel if the holder dies,
  even by SIGKILL), so one process at a time sends and deletes, and the others' flushes return
  at once (``busy``) while their enqueues still land in the shared file.

POSIX only (``fcntl``). The package stays on the standard library and httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from audit_ledger.client.errors import (
    AuthError,
    ClientError,
    ConflictError,
    InvalidEventError,
    ServerError,
    error_from_response,
)
from audit_ledger.client.events import Receipt, encode_json
from audit_ledger.client.transport import response_json

if TYPE_CHECKING:
    from audit_ledger.client.api import AuditLedgerClient

__all__ = ["FlushReport", "Outbox", "PoisonedEvent"]

_log = logging.getLogger("audit_ledger.client.outbox")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- enqueue order (AUTOINCREMENT: never reused)
    event_id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,                    -- the exact request bytes, resent unchanged
    enqueued_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,   -- flushes that ended in a 5xx on this row
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS outbox_poison (
    id INTEGER PRIMARY KEY,                -- the row's id in outbox
    event_id TEXT NOT NULL,
    body BLOB NOT NULL,
    enqueued_at TEXT NOT NULL,
    poisoned_at TEXT NOT NULL,
    status INTEGER,
    problem TEXT NOT NULL
);
"""

#: Statuses that refuse the event itself: resending the same bytes can never succeed.
_POISON_STATUSES: Final = frozenset({400, 409, 413, 422})


@dataclass(frozen=True, slots=True)
class PoisonedEvent:
    """An event the ledger refused for good, kept in ``outbox_poison`` for an operator."""

    event_id: str
    body: bytes
    status: int | None
    problem: str
    enqueued_at: str
    poisoned_at: str


@dataclass(frozen=True, slots=True)
class FlushReport:
    """What one :meth:`Outbox.flush` did."""

    sent: int = 0
    replayed: int = 0
    poisoned: int = 0
    #: True when another process held the flush lock (it is flushing the same file).
    busy: bool = False


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    event_id: str
    body: bytes


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Outbox:
    """A durable queue of events in a SQLite file, flushed to the ledger in order.

    ``batch_size`` events per request (at most the server's batch limit); a row whose sends end
    in a 5xx is set aside after ``max_attempts`` flushes.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, batch_size: int = 100, max_attempts: int = 20
    ) -> None:
        if batch_size < 1 or max_attempts < 1:
            raise ClientError("batch_size and max_attempts must be at least 1")
        self.path = Path(path)
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        # Plaintext events: the file is the bot's alone (SQLite gives -wal/-shm the same mode).
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)  # also an existing file made with a looser umask
        finally:
            os.close(fd)
        self._db = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        self._use_wal(deadline=time.monotonic() + 60.0)
        # FULL: the WAL is fsynced at every commit, so an enqueue that returned survives a
        # power cut, not only a process crash (https://sqlite.org/pragma.html#pragma_synchronous).
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=60000")
        self._db.executescript(_SCHEMA)
        self._mutex = threading.Lock()  # one connection, used from the loop and its threads
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._wake = asyncio.Event()

    def _use_wal(self, *, deadline: float) -> None:
        """Put the file in WAL mode (persistent: later opens find it so already).

        Switching needs an exclusive lock, and SQLite refuses it at once with "database is
        locked" while another process opens or switches the same file, without calling the
        busy handler; so two bot processes starting together retry here until the deadline.
        """
        delay = 0.005
        while True:
            try:
                # The pragma answers with the mode in force: the old one if it could not switch.
                if str(self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal":
                    return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
            if time.monotonic() >= deadline:
                self._db.close()
                raise ClientError(f"could not put the outbox {self.path} in WAL mode (locked)")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def close(self) -> None:
        with self._mutex:
            self._db.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # -- enqueueing ---------------------------------------------------------------------------

    def enqueue(self, event: Mapping[str, Any]) -> str:
        """Store ``event`` durably (fsynced) and return its ``event_id``.

        The same ``event_id`` already queued with the same bytes is a no-op; with other bytes,
        :class:`ConflictError` (nothing stored). Floats and other unsendable values are refused
        with :class:`InvalidEventError`, as by the client.
        """
        raw_id = event.get("event_id")
        try:
            event_id = str(uuid.UUID(str(raw_id))) if raw_id is not None else None
        except ValueError:
            event_id = None
        if event_id is None:
            raise InvalidEventError(
                "event refused before queueing",
                [{"field": "event_id", "problem": "must be a UUID (build it with build_event)"}],
            )
        body = encode_json({**event, "event_id": event_id})
        with self._transaction() as db:
            found = db.execute("SELECT body FROM outbox WHERE event_id = ?", (event_id,)).fetchone()
            if found is not None:
                if bytes(found[0]) != body:
                    raise ConflictError(
                        f"event {event_id} is already queued with different content"
                    )
                return event_id
            db.execute(
                "INSERT INTO outbox (event_id, body, enqueued_at) VALUES (?, ?, ?)",
                (event_id, body, _now()),
            )
        return event_id

    async def put(self, event: Mapping[str, Any]) -> str:
        """:meth:`enqueue` off the event loop (the fsync takes milliseconds); wakes :meth:`run`."""
        event_id = await asyncio.to_thread(self.enqueue, event)
        self._wake.set()
        return event_id

    async def log(self, client: AuditLedgerClient, event_type: str, /, **kwargs: Any) -> str:
        """``client.build_event(event_type, **kwargs)``, queued durably: the outbox form of
        ``log_compliance_event`` (pass ``idempotency_key`` and ``occurred_at``)."""
        return await self.put(client.build_event(event_type, **kwargs))

    # -- state ----------------------------------------------------------------------------------

    def pending(self) -> int:
        """Events waiting to be sent."""
        with self._mutex:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def poisoned(self) -> list[PoisonedEvent]:
        """Events the ledger refused for good, oldest first."""
        with self._mutex:
            rows = self._db.execute(
                "SELECT event_id, body, status, problem, enqueued_at, poisoned_at "
                "FROM outbox_poison ORDER BY id"
            ).fetchall()
        return [PoisonedEvent(r[0], bytes(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    # -- flushing -------------------------------------------------------------------------------

    async def run(
        self,
        client: AuditLedgerClient,
        *,
        interval: float = 1.0,
        max_interval: float = 30.0,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Flush until ``stop`` is set (or forever): at once after :meth:`put`, else every
        ``interval`` seconds. Errors are logged, never raised: the events stay on disk. After a
        failed flush the next waits ``interval`` doubled per consecutive failure (at most
        ``max_interval``), even if events arrive meanwhile, so a ledger that is down is not
        hammered by a busy bot."""
        stop = stop or asyncio.Event()
        failures = 0
        while not stop.is_set():
            self._wake.clear()  # before the flush: a put during it triggers the next one
            try:
                await self.flush(client)
                failures = 0
            except ClientError as exc:
                failures += 1
                _log.error("audit-ledger outbox: flush stopped, events kept on disk (%s)", exc)
            if failures:
                delay = min(max_interval, interval * 2.0 ** min(failures - 1, 16))
                events = [stop]
            else:
                delay, events = interval, [self._wake, stop]
            waiters = [asyncio.ensure_future(event.wait()) for event in events]
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def flush(self, client: AuditLedgerClient) -> FlushReport:
        """Send every queued event, in order, until the queue is empty.

        Raises :class:`~audit_ledger.client.ServerUnavailableError` when the ledger stays
        unreachable through the client's retries, :class:`AuthError` on 401/403 and
        :class:`ServerError` on a 5xx (rows kept in each case; a row's 5xx count grows until it
        is set aside). Returns ``busy`` at once when another process is flushing this file.
        """
        with self._flush_lock() as held:
            if not held:
                return FlushReport(busy=True)
            sent = replayed = poisoned = 0
            while rows := await asyncio.to_thread(self._head, self.batch_size):
                s, r, p = await self._send_rows(client, rows)
                sent, replayed, poisoned = sent + s, replayed + r, poisoned + p
            return FlushReport(sent, replayed, poisoned)

    async def _send_rows(self, client: AuditLedgerClient, rows: list[_Row]) -> tuple[int, int, int]:
        if len(rows) > 1:
            body = b'{"events":[' + b",".join(row.body for row in rows) + b"]}"
            response = await client._send("POST", "/v1/events/batch", content=body)
            if response.status_code in {200, 201}:
                raw = response_json(response)
                items = raw.get("receipts") if isinstance(raw, Mapping) else None
                if not isinstance(items, list):
                    raise ServerError("the server returned a malformed batch answer")
                receipts = [Receipt.from_json(item, replayed=False) for item in items]
                await asyncio.to_thread(self._acknowledge, rows, receipts)
                n = len(rows)
                return (0, n, 0) if response.status_code == 200 else (n, 0, 0)
            if response.status_code in {401, 403}:
                raise error_from_response(response)
            # Refused or failed as a whole (409, 422, a 500 …): one by one, so that only the
            # event at fault is set aside or counted against max_attempts.
        sent = replayed = poisoned = 0
        for row in rows:
            response = await client._send("POST", "/v1/events", content=row.body)
            status = response.status_code
            if status in {200, 201}:
                receipt = Receipt.from_json(response_json(response), replayed=status == 200)
                await asyncio.to_thread(self._acknowledge, [row], [receipt])
                sent, replayed = sent + (status == 201), replayed + (status == 200)
            elif status in _POISON_STATUSES:
                error = error_from_response(response)
                await asyncio.to_thread(self._poison, row, status, str(error))
                poisoned += 1
            else:
                poisoned += (await self._failed(row, error_from_response(response)))[2]
        return sent, replayed, poisoned

    async def _failed(self, row: _Row, error: ClientError) -> tuple[int, int, int]:
        """A non-decision answer (401/403, 5xx, anything unexpected): keep the rows and stop."""
        if isinstance(error, AuthError):
            raise error
        attempts = await asyncio.to_thread(self._count_attempt, row, str(error))
        if attempts >= self.max_attempts:
            await asyncio.to_thread(
                self._poison, row, error.status, f"{error} (after {attempts} attempts)"
            )
            return 0, 0, 1
        raise error

    # -- the file -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            # IMMEDIATE: take the write lock first, so the check and the insert are one step
            # even with another process enqueueing into the same file.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _flush_lock(self) -> Iterator[bool]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True  # the kernel releases it when fd closes, or the process dies
        finally:
            os.close(fd)

    def _head(self, limit: int) -> list[_Row]:
        with self._mutex:
            rows = self._db.execute(
                "SELECT id, event_id, body FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [_Row(r[0], r[1], bytes(r[2])) for r in rows]

    def _acknowledge(self, rows: list[_Row], receipts: list[Receipt]) -> None:
        """Delete the rows the receipts acknowledge — only when they match one for one."""
        if [r.event_id.lower() for r in receipts] != [row.event_id for row in rows]:
            raise ServerError("the server's receipts do not match the events sent; kept them")
        with self._transaction() as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(row.id,) for row in rows])

    def _poison(self, row: _Row, status: int | None, problem: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO outbox_poison (id, event_id, body, enqueued_at, poisoned_at, status, "
                "problem) SELECT id, event_id, body, enqueued_at, ?, ?, ? FROM outbox WHERE id = ?",
                (_now(), status, problem, row.id),
            )
            db.execute("DELETE FROM outbox WHERE id = ?", (row.id,))
        _log.error(
            "audit-ledger outbox: event %s REFUSED by the ledger (%s); moved to the "
            "outbox_poison table of %s — it will not be resent, an operator must look at it",
            row.event_id,
            problem,
            self.path,
        )

    def _count_attempt(self, row: _Row, problem: str) -> int:
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (problem, row.id),
            )
            found = db.execute("SELECT attempts FROM outbox WHERE id = ?", (row.id,)).fetchone()
        return int(found[0]) if found else 0
