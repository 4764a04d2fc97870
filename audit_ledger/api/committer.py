"""Group commit: concurrent append requests share one transaction.

Each request hands its (already validated) events to :class:`GroupCommitter` and awaits its
receipts. A single consumer appends in a worker thread, one transaction at a time: it locks the
log's head first and only then takes every request queued so far — those that arrived while the
previous commit ran *and* those that arrived while this process waited for the lock (another
worker process held it). Under load many requests share one commit (and one fsync); with no load
a request commits alone without waiting. Requests are never split: each request's events commit
together or not at all.

That first attempt writes without probing for replays (the unique event_id refuses one, and
nothing is written). Then, or when a request conflicts (a reused ``event_id``), the group is
appended the ordinary way: replays get their original receipts, and only a conflicting request
fails while the rest of the group is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from dataclasses import dataclass, field

from audit_ledger.errors import ConflictError
from audit_ledger.ledger.append import Receipt
from audit_ledger.ledger.events import PreparedEvent
from audit_ledger.ledger.service import Ledger
from audit_ledger.observability.metrics import COMMIT_GROUP_SIZE


@dataclass
class _Request:
    events: list[PreparedEvent]
    writer: str
    future: asyncio.Future[list[Receipt]] = field(repr=False)


class GroupCommitter:
    """Serialises appends of one process through one consumer task."""

    def __init__(self, ledger: Ledger, max_events: int = 2000) -> None:
        self.ledger = ledger
        self.max_events = max_events
        # Filled on the event loop, drained by the committing thread: deque's append and
        # popleft are atomic, so neither side needs a lock.
        self._pending: deque[_Request] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, events: list[PreparedEvent], writer: str) -> list[Receipt]:
        future: asyncio.Future[list[Receipt]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(events, writer, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                taken: list[_Request] = []
                try:
                    receipts = await asyncio.to_thread(
                        self.ledger.appender.append_gathered, functools.partial(self._take, taken)
                    )
                except ConflictError:
                    receipts = None  # the ordinary path finds the culprit
                except Exception as exc:  # noqa: BLE001 - every waiter must hear about the failure
                    if not taken:  # failed before taking (database unreachable): fail a group
                        self._take(taken)
                    self._fail(taken, exc)
                    continue
                if receipts is None:
                    await self._commit(taken)
                else:
                    self._deliver(taken, receipts)

    def _take(self, taken: list[_Request]) -> tuple[list[PreparedEvent], list[str]]:
        """Called by the committing thread with the head locked: the group to append."""
        count = 0
        while self._pending and (
            not taken or count + len(self._pending[0].events) <= self.max_events
        ):
            request = self._pending.popleft()
            taken.append(request)
            count += len(request.events)
        events = [e for r in taken for e in r.events]
        return events, [r.writer for r in taken for _ in r.events]

    def _deliver(self, group: list[_Request], receipts: list[Receipt]) -> None:
        COMMIT_GROUP_SIZE.observe(len(receipts))
        pos = 0
        for request in group:
            n = len(request.events)
            if not request.future.done():
                request.future.set_result(receipts[pos : pos + n])
            pos += n

    async def _commit(self, group: list[_Request]) -> None:
        while group:
            events = [e for r in group for e in r.events]
            writers = [r.writer for r in group for _ in r.events]
            try:
                receipts = await asyncio.to_thread(self.ledger.append, events, writers)
            except ConflictError as exc:
                culprit = self._owner(group, exc.index)
                if culprit is None or len(group) == 1:
                    self._fail(group, exc)
                    return
                offset = sum(len(r.events) for r in group[: group.index(culprit)])
                index = None if exc.index is None else exc.index - offset
                self._fail([culprit], ConflictError(str(exc), index))
                group = [r for r in group if r is not culprit]
                continue
            except Exception as exc:  # noqa: BLE001 - every waiter must hear about the failure
                self._fail(group, exc)
                return
            self._deliver(group, receipts)
            return

    @staticmethod
    def _owner(group: list[_Request], index: int | None) -> _Request | None:
        if index is None:
            return None
        pos = 0
        for request in group:
            if index < pos + len(request.events):
                return request
            pos += len(request.events)
        return None

    @staticmethod
    def _fail(group: list[_Request], exc: BaseException) -> None:
        for request in group:
            if not request.future.done():
                request.future.set_exception(exc)
