"""Group commit: concurrent append requests share one transaction.

Each request hands its (already validated) events to :class:`GroupCommitter` and awaits its
receipts. A single consumer takes everything that queued while the previous commit was running
and appends it in one transaction in a worker thread — so under load many requests share one
commit (and one fsync), and with no load a request commits alone without waiting. Requests are
never split: each request's events commit together or not at all. If one request conflicts
(reused ``event_id``), only that request fails and the rest of the group is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
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
        await self._queue.put(_Request(events, writer, future))
        return await future

    async def _run(self) -> None:
        while True:
            group = [await self._queue.get()]
            count = len(group[0].events)
            while count < self.max_events and not self._queue.empty():
                request = self._queue.get_nowait()
                group.append(request)
                count += len(request.events)
            await self._commit(group)

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
            COMMIT_GROUP_SIZE.observe(len(events))
            pos = 0
            for request in group:
                n = len(request.events)
                if not request.future.done():
                    request.future.set_result(receipts[pos : pos + n])
                pos += n
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
