"""Connection-pool metrics (issue #15 item 6): how long getting a connection took, and how many
connections each pool holds, for the primary and the read replica's engine (label ``engine``).

SQLAlchemy has no event *before* a checkout (``checkout`` fires once a connection is in hand),
so the time is taken by a thin :class:`~sqlalchemy.pool.QueuePool` subclass, given to
``create_engine`` as its ``poolclass`` — the pool PostgreSQL and SQLite files get anyway. It
times ``_do_get``, the one place a checkout waits for a connection to be checked in (or opens a
new one while the pool may still grow), and refreshes the gauges from the pool's own counts
whenever a connection leaves or comes back, so they cannot drift.

The gauges are ``liveall`` in multiprocess mode (``serve --workers N``): one series per worker
(``pid`` label), gone when the worker dies — a worker whose own pool is exhausted waits even if
another's is idle, so a sum alone would hide it (``sum by (engine)`` gives the total).
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cache
from typing import Any

from prometheus_client import Gauge, Histogram
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

# SQLAlchemy names a pool's logger after its class's module: for this subclass that is under
# ``audit_ledger``, whose INFO lines go to the logs, so every dispose and re-creation of a pool
# ("Pool disposed. Pool size: 5 …") would be logged. SQLAlchemy's own pool loggers stay at
# WARNING; so does this one.
logging.getLogger(__name__).setLevel(logging.WARNING)

PRIMARY, REPLICA = "primary", "replica"

POOL_WAIT = Histogram(
    "ledger_db_pool_wait_seconds",
    "Time to get a connection from the SQLAlchemy pool: waiting for one to be checked in when "
    "all are in use (or opening a new one while the pool may grow), by engine.",
    ["engine"],
    # Microseconds when one is idle; up to the pool's 30 s timeout when none comes back.
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
POOL_CONNECTIONS = Gauge(
    "ledger_db_pool_connections",
    "Connections of the pool by state: in_use (checked out), idle (checked in), by engine.",
    ["engine", "state"],
    multiprocess_mode="liveall",
)
POOL_SIZE = Gauge(
    "ledger_db_pool_size",
    "Connections the pool keeps open (AUDIT_LEDGER_DB_POOL_SIZE), by engine.",
    ["engine"],
    multiprocess_mode="liveall",
)
POOL_MAX = Gauge(
    "ledger_db_pool_max_connections",
    "Connections the pool may hold at once (size plus overflow); checkouts beyond wait.",
    ["engine"],
    multiprocess_mode="liveall",
)

#: Set while a checkout is being timed: QueuePool._do_get calls itself again on some paths.
_timing = threading.local()


def max_connections(pool: QueuePool) -> int:
    """Checked-out connections at which a checkout starts to wait."""
    overflow: int = pool._max_overflow
    return pool.size() + max(overflow, 0)


class TimedQueuePool(QueuePool):
    """A QueuePool that reports checkout time and its connection counts under :attr:`engine`.
    Subclassed per label by :func:`timed_pool`: ``recreate()`` (on ``dispose``) builds the
    same class again, so the label survives without extra constructor arguments."""

    engine: str = PRIMARY

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._report()  # size and limit are known before the first checkout

    def _do_get(self) -> ConnectionPoolEntry:
        if getattr(_timing, "active", False):
            return super()._do_get()
        _timing.active = True
        started = time.perf_counter()
        try:
            return super()._do_get()
        finally:
            _timing.active = False
            POOL_WAIT.labels(self.engine).observe(time.perf_counter() - started)
            self._report()

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        super()._do_return_conn(record)
        self._report()

    def dispose(self) -> None:
        super().dispose()
        self._report()

    def _report(self) -> None:
        POOL_CONNECTIONS.labels(self.engine, "in_use").set(self.checkedout())
        POOL_CONNECTIONS.labels(self.engine, "idle").set(self.checkedin())
        POOL_SIZE.labels(self.engine).set(self.size())
        POOL_MAX.labels(self.engine).set(max_connections(self))


@cache
def timed_pool(engine: str) -> type[TimedQueuePool]:
    """The pool class for an engine labelled ``engine`` (``primary`` or ``replica``)."""
    return type(f"TimedQueuePool_{engine}", (TimedQueuePool,), {"engine": engine})
