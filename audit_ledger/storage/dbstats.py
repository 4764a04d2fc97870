"""Database server facts for the metrics (issue #15 item 6), read at scrape time: connections to
this database and, on a PostgreSQL primary with replicas, their replay lag (PostgreSQL 10+
``pg_stat_replication.replay_lag``). SQLite has neither: nothing is reported for it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from audit_ledger.storage.store import Store


@dataclass(frozen=True, slots=True)
class DatabaseStats:
    #: Server connections to this database (all clients, not only this process's pool).
    connections: int
    #: Per replica (``application_name``, else its address): seconds its replay lags behind.
    replication_lag_seconds: dict[str, float]


def database_stats(store: Store) -> DatabaseStats | None:
    """None on SQLite."""
    if store.dialect != "postgresql":
        return None
    with store.reader() as conn:
        connections = conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        ).scalar_one()
        rows = conn.execute(
            text(
                "SELECT COALESCE(NULLIF(application_name, ''), host(client_addr), 'replica'),"
                " COALESCE(EXTRACT(EPOCH FROM replay_lag), 0) FROM pg_stat_replication"
            )
        ).all()
    return DatabaseStats(int(connections), {str(name): float(lag) for name, lag in rows})
