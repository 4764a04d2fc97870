"""Process and database metrics (issue #15 item 6) on both backends: statements slower than
``SLOW_QUERY_SECONDS`` are counted (a real ``pg_sleep`` on PostgreSQL), the pool gauges and the
server's connection count appear at scrape time, and SQLite reports no server facts."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from audit_ledger.ledger.service import Ledger
from audit_ledger.observability import metrics


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


def test_pool_and_server_connections(ledger: Ledger) -> None:
    with ledger.engine.connect() as held:
        held.execute(text("SELECT 1"))
        samples = _samples(ledger)
        assert samples[("ledger_db_pool_connections", (("state", "in_use"),))] >= 1
    assert ("ledger_db_pool_connections", (("state", "idle"),)) in samples
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
