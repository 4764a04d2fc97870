"""Group commit's bookkeeping against a fake appender (no database): who joins a group, who
hears about a conflict or a failure, and the direct path before start and after stop. The real
thing, against both backends and concurrent requests, is tests/integration/api/test_group_commit.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, cast

import pytest

from audit_ledger.errors import ConflictError, DatabaseUnavailableError
from audit_ledger.ledger.appends.group_commit import GroupCommitter
from audit_ledger.ledger.appends.prepare import PreparedEvent
from audit_ledger.ledger.appends.write import Appender, Receipt


def _event(event_id: str) -> PreparedEvent:
    return PreparedEvent(event_id, "c", "t", "2026-01-01T00:00:00.000000Z", None, b"{}", {}, None)


class FakeAppender:
    """Numbers events in arrival order; ``conflicting`` event ids conflict, ``fail`` raises."""

    def __init__(self) -> None:
        self.size = 0
        self.groups: list[list[str]] = []
        self.conflicting: set[str] = set()
        self.fail: Exception | None = None
        self.gate: threading.Event | None = None
        self.gathered = threading.Event()
        #: set: a write waits for it (after taking its group), announcing itself in ``writing``
        self.hold_write: threading.Event | None = None
        self.writing = threading.Event()

    def _write(self, events: Sequence[PreparedEvent]) -> list[Receipt]:
        if self.hold_write is not None:
            self.writing.set()
            self.hold_write.wait(10)
        if self.fail is not None:
            raise self.fail
        for index, event in enumerate(events):
            if event.event_id in self.conflicting:
                raise ConflictError("conflict", index)
        self.groups.append([e.event_id for e in events])
        receipts = [Receipt(self.size + i, e.event_id, "00", "t") for i, e in enumerate(events)]
        self.size += len(events)
        return receipts

    def append_gathered(
        self, take: Callable[[], tuple[Sequence[PreparedEvent], Sequence[str]]]
    ) -> list[Receipt] | None:
        if self.gate is not None:  # "waiting for the head lock"
            self.gathered.set()
            self.gate.wait(10)
        events, _ = take()
        return self._write(events)

    def append(self, events: Sequence[PreparedEvent], writer: Any) -> list[Receipt]:
        return self._write(events)


def _committer(fake: FakeAppender) -> GroupCommitter:
    return GroupCommitter(cast(Appender, fake))


def _results(futures: list[Future[list[Receipt]]]) -> list[Any]:
    out: list[Any] = []
    for future in futures:
        try:
            out.append([r.seq for r in future.result(10)])
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            out.append(exc)
    return out


def test_requests_queued_while_the_lock_is_awaited_share_one_transaction() -> None:
    fake = FakeAppender()
    fake.gate = threading.Event()
    committer = _committer(fake)
    committer.start()
    try:
        first = committer.submit([_event("a")], "bot")
        assert fake.gathered.wait(10)
        later = [committer.submit([_event(x), _event(x + "2")], "bot") for x in "bcd"]
        fake.gate.set()
        assert _results([first, *later]) == [[0], [1, 2], [3, 4], [5, 6]]
    finally:
        committer.stop()
    assert fake.groups == [["a", "b", "b2", "c", "c2", "d", "d2"]]


def test_a_conflicting_request_fails_alone_and_the_rest_commit() -> None:
    fake = FakeAppender()
    fake.gate = threading.Event()
    fake.conflicting = {"bad"}
    committer = _committer(fake)
    committer.start()
    try:
        first = committer.submit([_event("a")], "bot")
        assert fake.gathered.wait(10)
        bad = committer.submit([_event("x"), _event("bad")], "bot")
        good = committer.submit([_event("c")], "bot")
        fake.gate.set()
        results = _results([first, bad, good])
    finally:
        committer.stop()
    assert results[0] == [0]
    assert isinstance(results[1], ConflictError)
    assert results[1].index == 1  # renumbered within its own request
    assert results[2] == [1]


def test_a_failed_transaction_fails_every_request_in_it() -> None:
    fake = FakeAppender()
    fake.fail = DatabaseUnavailableError("gone")
    committer = _committer(fake)
    committer.start()
    try:
        results = _results([committer.submit([_event(x)], "bot") for x in "abc"])
    finally:
        committer.stop()
    assert all(isinstance(r, DatabaseUnavailableError) for r in results)


def test_before_start_and_after_stop_a_submission_commits_in_the_callers_thread() -> None:
    fake = FakeAppender()
    committer = _committer(fake)
    assert _results([committer.submit([_event("a")], "bot")]) == [[0]]
    committer.start()
    committer.stop()
    assert not committer.running
    assert _results([committer.submit([_event("b")], "bot")]) == [[1]]


def test_stop_finishes_the_commit_in_progress_and_fails_what_is_still_queued() -> None:
    fake = FakeAppender()
    fake.hold_write = threading.Event()
    committer = _committer(fake)
    committer.start()
    first = committer.submit([_event("a")], "bot")
    assert fake.writing.wait(10)  # "a" is being written: what comes now waits for the next
    queued = committer.submit([_event("b")], "bot")
    stopper = threading.Thread(target=committer.stop)
    stopper.start()
    deadline = time.monotonic() + 10
    while committer.running and time.monotonic() < deadline:  # stop() has begun
        time.sleep(0.001)
    fake.hold_write.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert _results([first]) == [[0]]
    with pytest.raises(DatabaseUnavailableError, match="shutting down"):
        queued.result(10)
    assert fake.groups == [["a"]]
