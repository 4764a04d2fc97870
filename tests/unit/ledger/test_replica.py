"""The read-routing rule of :class:`ReadSource` (issue #16), over stores that are just a size.

The real streaming replica is in ``tests/integration/test_read_replica.py``; these pin the
edges that a live standby makes slow or racy to reach: the skip window after a failure, the
primary's own errors not being blamed on the replica, and no wait when nothing can arrive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from audit_ledger.errors import DatabaseUnavailableError, StorageError
from audit_ledger.ledger.replica import ReadSource


@dataclass
class SizeOnly:
    name: str
    log_size: int
    up: bool = True
    asked: int = 0

    def size(self) -> int:
        self.asked += 1
        if not self.up:
            raise DatabaseUnavailableError("database is unreachable")
        return self.log_size


def source(
    primary: SizeOnly, replica: SizeOnly | None, **kwargs: float
) -> tuple[ReadSource[SizeOnly], list[str]]:
    seen: list[str] = []
    return ReadSource(primary, replica, on_outcome=seen.append, **kwargs), seen


def test_without_a_replica_everything_runs_on_the_primary_uncounted() -> None:
    routed, seen = source(SizeOnly("primary", 5), None)
    assert routed.run(99, lambda s: s.name) == "primary"
    assert seen == []


def test_a_caught_up_replica_serves_and_a_short_one_falls_back_after_the_wait() -> None:
    primary, replica = SizeOnly("primary", 10), SizeOnly("replica", 7)
    routed, seen = source(primary, replica, wait_seconds=0.05, poll_seconds=0.01)
    assert routed.run(7, lambda s: s.name) == "replica"
    started = time.monotonic()
    assert routed.run(8, lambda s: s.name) == "primary"
    assert time.monotonic() - started >= 0.05
    assert seen == ["replica", "primary_fallback"]


def test_no_wait_for_a_size_the_primary_has_not_got_either() -> None:
    routed, seen = source(SizeOnly("primary", 10), SizeOnly("replica", 7), wait_seconds=30)
    started = time.monotonic()
    assert routed.run(11, lambda s: s.name) == "primary"
    assert time.monotonic() - started < 1
    assert seen == ["primary_fallback"]


def test_a_failed_replica_is_skipped_for_a_while_then_asked_again() -> None:
    replica = SizeOnly("replica", 10, up=False)
    routed, seen = source(SizeOnly("primary", 10), replica, retry_after_seconds=0.2)
    assert routed.run(1, lambda s: s.name) == "primary"
    assert routed.run(1, lambda s: s.name) == "primary"
    assert replica.asked == 1  # the second read did not pay another connect attempt
    replica.up = True
    time.sleep(0.25)
    assert routed.run(1, lambda s: s.name) == "replica"
    assert seen == ["replica_down", "replica_down", "replica"]


def test_a_replica_failing_during_the_read_hands_it_to_the_primary() -> None:
    routed, seen = source(SizeOnly("primary", 10), SizeOnly("replica", 10))

    def read(store: SizeOnly) -> str:
        if store.name == "replica":
            raise StorageError("canceling statement due to conflict with recovery")
        return store.name

    assert routed.run(3, read) == "primary"
    assert seen == ["replica_down"]


def test_the_primarys_own_failure_is_not_blamed_on_the_replica() -> None:
    routed, seen = source(SizeOnly("primary", 10, up=False), SizeOnly("replica", 3))
    with pytest.raises(DatabaseUnavailableError):
        routed.run(5, lambda s: s.name)
    assert seen == []
