"""Group commit: concurrent appends share one transaction (the HTTP service's strategy).

Each caller hands its (already validated) events to :class:`GroupCommitter` and gets a future
of its receipts. One committing thread appends, one transaction at a time: it locks the log's
head first and only then takes every request queued so far — those that arrived while the
previous commit ran *and* those that arrived while this process waited for the lock (another
worker process held it). Under load many requests share one commit (and one fsync); with no load
a request commits alone without waiting. Requests are never split: each request's events commit
together or not at all.

That first attempt writes without probing for replays (the unique event_id refuses one, and
nothing is written). Then, or when a request conflicts (a reused ``event_id``), the group is
appended the ordinary way: replays get their original receipts, and only a conflicting request
fails while the rest of the group is retried. A request never fails because of a sibling that
has not committed: one whose event_id clashes with another request of the group is set aside
and appended alone once the group has committed, so it gets the original receipt when its
content is what was stored, and a 409 only when it is not.

The futures are :class:`concurrent.futures.Future`: the API awaits them on its event loop
(``asyncio.wrap_future``) without holding a thread, and use cases running in a thread (a read
recording itself) block on them. Before :meth:`start` and after :meth:`stop` a submission is
appended straight away in the caller's thread.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from audit_ledger.errors import ConflictError, DatabaseUnavailableError
from audit_ledger.ledger.appends.prepare import PreparedEvent
from audit_ledger.ledger.appends.write import Appender, Receipt
from audit_ledger.observability.metrics import COMMIT_GROUP_SIZE


@dataclass
class _Request:
    events: Sequence[PreparedEvent]
    writer: str
    future: Future[list[Receipt]] = field(repr=False)


class GroupCommitter:
    """Serialises one process's appends through one committing thread."""

    def __init__(self, appender: Appender, max_events: int = 2000) -> None:
        self.appender = appender
        self.max_events = max_events
        # Filled by any thread, drained by the committing thread: deque's append and popleft
        # are atomic, so neither side needs a lock.
        self._pending: deque[_Request] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the commit in progress, then fail whatever is still queued."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True  # before ``running`` turns False: nothing more is taken
        self._thread = None
        self._wake.set()
        thread.join()
        left = list(self._pending)
        self._pending.clear()
        self._fail(left, DatabaseUnavailableError("the service is shutting down"))

    def submit(self, events: Sequence[PreparedEvent], writer: str) -> Future[list[Receipt]]:
        """Queue ``events`` (written by ``writer``); the future holds their receipts."""
        future: Future[list[Receipt]] = Future()
        if self._thread is None:
            try:
                future.set_result(self.appender.append(events, writer))
            except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
                future.set_exception(exc)
            return future
        self._pending.append(_Request(events, writer, future))
        self._wake.set()
        return future

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait()
            self._wake.clear()
            while self._pending and not self._stopping:
                self._commit_next()

    def _commit_next(self) -> None:
        taken: list[_Request] = []
        try:
            receipts = self.appender.append_gathered(functools.partial(self._take, taken))
        except ConflictError:
            receipts = None  # the ordinary path finds the culprit
        except Exception as exc:  # noqa: BLE001 - every waiter must hear about the failure
            if not taken:  # failed before taking (database unreachable): fail a group
                self._take(taken)
            self._fail(taken, exc)
            return
        if receipts is None:
            self._commit(taken)
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

    @staticmethod
    def _deliver(group: list[_Request], receipts: list[Receipt]) -> None:
        COMMIT_GROUP_SIZE.observe(len(receipts))
        pos = 0
        for request in group:
            n = len(request.events)
            if not request.future.done():
                request.future.set_result(receipts[pos : pos + n])
            pos += n

    def _commit(self, group: list[_Request]) -> None:
        # Requests set aside because their event_id clashed with an *uncommitted* sibling's:
        # whether they conflict is only known against what commits (DESIGN §4: the same
        # content again gets 200 and the original receipt), so each runs alone afterwards
        # (issue #12: a request whose content was the one finally stored got a batch-wording
        # 409 because of a sibling that then lost).
        deferred: list[_Request] = []
        while group:
            events = [e for r in group for e in r.events]
            writers = [r.writer for r in group for _ in r.events]
            try:
                receipts = self.appender.append(events, writers)
            except ConflictError as exc:
                culprit = self._owner(group, exc.index)
                if culprit is None or len(group) == 1:
                    self._fail(group, exc)
                    break
                if _repeats_itself(culprit):  # its own batch conflicts: nothing to wait for
                    offset = sum(len(r.events) for r in group[: group.index(culprit)])
                    index = None if exc.index is None else exc.index - offset
                    self._fail([culprit], ConflictError(str(exc), index))
                else:
                    deferred.append(culprit)
                group = [r for r in group if r is not culprit]
                continue
            except Exception as exc:  # noqa: BLE001 - every waiter must hear about the failure
                self._fail(group, exc)
                break
            self._deliver(group, receipts)
            break
        for request in deferred:
            self._commit([request])

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


def _repeats_itself(request: _Request) -> bool:
    """True when the request's own events repeat an event_id with different content."""
    first: dict[str, PreparedEvent] = {}
    for event in request.events:
        earlier = first.setdefault(event.event_id, event)
        if earlier is not event and not earlier.same_request(event):
            return True
    return False
