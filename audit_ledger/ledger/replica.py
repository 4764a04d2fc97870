"""Where a read runs: a PostgreSQL hot standby when it has replayed what the read needs, else
the primary (issue #16, ``AUDIT_LEDGER_READ_DATABASE_URL``).

A streaming replica replays the primary's WAL in commit order, so its log is always a prefix of
the primary's: the entries, subtree hashes and head of some earlier size. Everything the ledger
serves is a function of a tree size (RFC 9162 §2.1: a proof for ``tree_size`` N needs the
hashes of the first N leaves; a page of leaves up to N needs those leaves; a tile of a
checkpoint of size N needs the hashes that size covers), so the rule is one comparison: a read
that needs size N runs on the replica only once the replica's head (``ledger_head``, replayed
with the rows it describes) is at least N. Otherwise it waits briefly for replay (bounded:
``wait_seconds``, polling the replica's head) and then runs on the primary. Nothing is ever
answered from a tree the replica has not got: a stale replica costs latency, never a wrong
proof, a short page that claims to be the end, or a 404 for a leaf that exists.

A replica that fails (unreachable, or a query cancelled by a recovery conflict — both surface
as :class:`~audit_ledger.errors.StorageError`) is skipped for ``retry_after_seconds``, and the
read runs on the primary: a replica going away never becomes a 5xx. Each routed read is counted
in ``ledger_read_replica_total{outcome}``: ``replica``, ``waited``, ``primary_fallback``,
``replica_down``.

``/readyz`` reports the replica (:meth:`ReadSource.replica_state`: reachable, entries behind)
without making readiness depend on it: reads fall back to the primary.

Only reads are routed; the callers keep writes (appends, the ``records_read`` operation a read
records, checkpoints, the scheduler's jobs) on the primary store, which is also where
:class:`ReadSource` runs everything when no replica is configured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from audit_ledger.errors import StorageError
from audit_ledger.observability.metrics import READ_REPLICA

REPLICA, WAITED, PRIMARY_FALLBACK, REPLICA_DOWN = (
    "replica",
    "waited",
    "primary_fallback",
    "replica_down",
)
OUTCOMES = (REPLICA, WAITED, PRIMARY_FALLBACK, REPLICA_DOWN)


class SizedStore(Protocol):
    """What routing needs of a store: its log size (the head's, as committed or replayed)."""

    def size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ReplicaState:
    reachable: bool
    #: Entries the primary has committed that the replica has not replayed yet.
    lag_entries: int | None


S = TypeVar("S", bound=SizedStore)
T = TypeVar("T")


def count_outcome(outcome: str) -> None:
    READ_REPLICA.labels(outcome).inc()


class ReadSource(Generic[S]):
    """Runs reads on the replica when it has caught up with what they need, else the primary."""

    def __init__(
        self,
        primary: S,
        replica: S | None = None,
        *,
        wait_seconds: float = 0.2,
        poll_seconds: float = 0.01,
        retry_after_seconds: float = 5.0,
        on_outcome: Callable[[str], None] = count_outcome,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.retry_after_seconds = retry_after_seconds
        self.on_outcome = on_outcome
        self._down_until = 0.0
        self._lock = threading.Lock()
        if replica is not None:
            for outcome in OUTCOMES:  # every series exists from the start (rate() needs it)
                READ_REPLICA.labels(outcome)

    def run(self, needed: int, read: Callable[[S], T]) -> T:
        """``read(store)`` on a store whose log has at least ``needed`` entries if the replica
        can give that, else on the primary (which also refuses sizes it has not got)."""
        if self.replica is None:
            return read(self.primary)
        outcome = self._choose(self.replica, needed)
        if outcome in (REPLICA, WAITED):
            try:
                result = read(self.replica)
            except StorageError:
                # Gone or cancelled between the size check and the read: the primary answers.
                self._mark_down()
                outcome = REPLICA_DOWN
            else:
                self.on_outcome(outcome)
                return result
        self.on_outcome(outcome)
        return read(self.primary)

    def _choose(self, replica: S, needed: int) -> str:
        with self._lock:
            if time.monotonic() < self._down_until:
                return REPLICA_DOWN
        try:
            if replica.size() >= needed:
                return REPLICA
        except StorageError:
            self._mark_down()
            return REPLICA_DOWN
        # Nothing to wait for when the primary has not got it either: it answers (or refuses
        # the size) at once.
        if self.primary.size() < needed:
            return PRIMARY_FALLBACK
        deadline = time.monotonic() + self.wait_seconds
        try:
            while time.monotonic() < deadline:
                time.sleep(self.poll_seconds)
                if replica.size() >= needed:
                    return WAITED
        except StorageError:
            self._mark_down()
            return REPLICA_DOWN
        return PRIMARY_FALLBACK

    def replica_state(self) -> ReplicaState | None:
        """For readiness: whether the replica answers and how many entries its replay is
        behind the primary (None when the primary does not answer). None without a replica.
        A replica that does not answer is skipped by reads for a while, as when a read finds it
        down."""
        if self.replica is None:
            return None
        try:
            replayed = self.replica.size()
        except StorageError:
            self._mark_down()
            return ReplicaState(reachable=False, lag_entries=None)
        try:
            committed = self.primary.size()
        except StorageError:
            return ReplicaState(reachable=True, lag_entries=None)
        return ReplicaState(reachable=True, lag_entries=max(0, committed - replayed))

    def _mark_down(self) -> None:
        # Skip the replica for a while: each read would otherwise pay a connect attempt.
        with self._lock:
            self._down_until = time.monotonic() + self.retry_after_seconds
