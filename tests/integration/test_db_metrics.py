"""Process and database metrics (issue #15 item 6) on both backends: statements slower than
``SLOW_QUERY_SECONDS`` are counted (a real ``pg_sleep`` on PostgreSQL), the pool gauges follow
checkouts, more threads than the pool has connections wait and ``ledger_db_pool_wait_seconds``
counts it, the server's connection count appears at scrape time, and SQLite reports no server
facts."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from audit_ledger.ledger.service import Ledger
from audit_ledger.observability import metrics
from audit_ledger.observability.pool import max_connections
from audit_ledger.settings import Settings


def _samples(ledger: Ledger) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = metrics.render(metrics.LedgerStateCollector(ledger)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def _slow(operation: str) -> float:
    return metrics.SLOW_QUERIES.labels(operation)._value.get()


def test_slow_statements_are_counted(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics.instrument_engine(ledger.engine)
    before = _slow("SELECT")
    with ledger.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert _slow("SELECT") == before  # fast: not counted
    if ledger.store.dialect == "postgresql":
        with ledger.engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(:s)"), {"s": metrics.SLOW_QUERY_SECONDS + 0.05})
    else:  # SQLite has no sleep: lower the bar instead
        monkeypatch.setattr(metrics, "SLOW_QUERY_SECONDS", 0.0)
        with ledger.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    assert _slow("SELECT") == before + 1


def _pool(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"engine": "primary", **labels}) or 0.0


def test_pool_and_server_connections(ledger: Ledger) -> None:
    pool = ledger.engine.pool
    with ledger.engine.connect() as held, ledger.engine.connect() as other:
        held.execute(text("SELECT 1"))
        other.execute(text("SELECT 1"))
        samples = _samples(ledger)
        in_use = ("ledger_db_pool_connections", (("engine", "primary"), ("state", "in_use")))
        assert samples[in_use] == 2
    assert _pool("ledger_db_pool_connections", state="in_use") == 0  # both checked in again
    assert _pool("ledger_db_pool_connections", state="idle") == pool.checkedin() >= 2
    assert _pool("ledger_db_pool_size") == pool.size()
    assert _pool("ledger_db_pool_max_connections") == max_connections(pool)
    connections = samples.get(("ledger_database_connections", ()))
    if ledger.store.dialect == "postgresql":
        assert connections is not None
        assert connections >= 1
        stats = ledger.database_stats()
        assert stats is not None
        assert stats.replication_lag_seconds == {}  # no replica on the test server
    else:
        assert connections is None
        assert ledger.database_stats() is None


def test_checkouts_beyond_the_pool_wait_and_the_waits_are_counted(settings: Settings) -> None:
    """The pool full (``max_connections`` holders keep theirs until released), four more
    checkouts wait for a check-in — and ``ledger_db_pool_wait_seconds`` counts them as waits.

    The holders are released HOLD seconds after the last of the four said it is about to check
    out, so each waits about HOLD however late a loaded box runs its thread (the holders once
    held for a fixed time from a common start, and a box slow to open connections left the
    late ones too little of it to count as waits)."""
    hold = 0.6
    waiters = 4
    # A small pool on PostgreSQL (2 + 2 overflow); SQLite's is SQLAlchemy's (5 + 10).
    ledger = Ledger.open(settings.model_copy(update={"db_pool_size": 2}))
    try:
        limit = max_connections(ledger.engine.pool)
        before = {
            "count": _pool("ledger_db_pool_wait_seconds_count"),
            "sum": _pool("ledger_db_pool_wait_seconds_sum"),
            "fast": _pool("ledger_db_pool_wait_seconds_bucket", le="0.25"),
        }
        holding, asking, release = threading.Semaphore(0), threading.Semaphore(0), threading.Event()
        peak: list[float] = []
        errors: list[BaseException] = []

        def hold_one() -> None:
            try:
                with ledger.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                    peak.append(_pool("ledger_db_pool_connections", state="in_use"))
                    holding.release()
                    release.wait(60)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        def wait_for_one() -> None:
            try:
                asking.release()
                with ledger.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        holders = [threading.Thread(target=hold_one) for _ in range(limit)]
        late = [threading.Thread(target=wait_for_one) for _ in range(waiters)]
        try:
            for thread in holders:
                thread.start()
            assert all(holding.acquire(timeout=60) for _ in holders)  # the pool is full
            for thread in late:
                thread.start()
            assert all(asking.acquire(timeout=60) for _ in late)
            time.sleep(hold)  # the four are waiting in their checkouts now
        finally:
            release.set()
            for thread in holders + late:
                thread.join(60)
        assert errors == []
        count = _pool("ledger_db_pool_wait_seconds_count") - before["count"]
        waited = count - (_pool("ledger_db_pool_wait_seconds_bucket", le="0.25") - before["fast"])
        total = _pool("ledger_db_pool_wait_seconds_sum") - before["sum"]
    finally:
        ledger.close()
    assert count == limit + waiters  # one timed checkout per connection
    assert waited >= waiters  # those beyond the pool waited for a check-in
    # Each waited from its checkout until the release: HOLD, less whatever the box took to run
    # its thread from saying so to asking the pool; three quarters of the ideal is still far
    # above what no waiting would give.
    assert total >= waiters * hold * 0.75
    assert max(peak) == limit  # the gauge saw the pool full
