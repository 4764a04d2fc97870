"""Engines for the two first-class backends.

SQLite (the embedded default): WAL journal with ``synchronous=FULL`` so an acknowledged append
survives a power cut, a busy timeout so concurrent processes queue instead of failing, and write
transactions opened with ``BEGIN IMMEDIATE`` (DESIGN §5) so two appenders never both read the
same head. Read transactions stay deferred so they never block writers.

PostgreSQL (psycopg 3): READ COMMITTED, ``synchronous_commit`` left on; appends serialise on the
``ledger_head`` row lock.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from audit_ledger.errors import ConfigError

#: Execution option that makes a SQLite transaction start with BEGIN IMMEDIATE.
WRITE_OPTION = "audit_ledger_write"


def normalise_url(url: str) -> str:
    """Pick psycopg 3 for plain ``postgresql://`` URLs."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_engine_for_url(url: str, *, pool_size: int = 10) -> Engine:
    """Create an engine configured for the ledger on PostgreSQL or SQLite."""
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        raise ConfigError("AUDIT_LEDGER_DATABASE_URL is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed.render_as_string(hide_password=False))
    if backend == "postgresql":
        return create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            isolation_level="READ COMMITTED",
        )
    raise ConfigError(f"unsupported database backend {backend!r} (use postgresql or sqlite)")


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 60.0})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below emit BEGIN itself (pysqlite's own is unreliable).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
