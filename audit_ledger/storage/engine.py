"""Engines for the two first-class backends.

SQLite (the embedded default): WAL journal with ``synchronous=FULL`` so an acknowledged append
survives a power cut, a busy timeout so concurrent processes queue instead of failing, and write
transactions opened with ``BEGIN IMMEDIATE`` (DESIGN §5) so two appenders never both read the
same head. Read transactions stay deferred so they never block writers.

A SQLite file is created only when asked (``create=True``: ``db upgrade`` and ``serve``'s first
start, both through the migrations). Every other engine opens the file read-write without
creating it (SQLite URI ``mode=rw``, https://sqlite.org/uri.html), so a mistyped URL is an error
naming the path instead of a new, empty ledger.

PostgreSQL (psycopg 3): READ COMMITTED, ``synchronous_commit`` left on; appends serialise on the
``ledger_head`` row lock.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import QueuePool

from audit_ledger.errors import ConfigError

#: Execution option that makes a SQLite transaction start with BEGIN IMMEDIATE.
WRITE_OPTION = "audit_ledger_write"


def normalise_url(url: str) -> str:
    """Pick psycopg 3 for plain ``postgresql://`` URLs."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def missing_database_message(path: str) -> str:
    return (
        f"no database at {path}; run 'audit-ledger db upgrade' or check AUDIT_LEDGER_DATABASE_URL"
    )


def create_engine_for_url(
    url: str,
    *,
    pool_size: int = 10,
    create: bool = False,
    connect_timeout: int | None = None,
    pool_class: type[QueuePool] | None = None,
) -> Engine:
    """Create an engine configured for the ledger on PostgreSQL or SQLite.

    A SQLite file that does not exist is a :class:`ConfigError` unless ``create`` (migrations
    only): never an empty database made by a typo. ``connect_timeout`` (seconds, PostgreSQL
    only) bounds a connection attempt: a read replica that went away must cost a read little
    before it falls back to the primary. ``pool_class``: a QueuePool subclass (the pool both
    backends' files and servers get by default) for a serving process's pool metrics.
    """
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        raise ConfigError("AUDIT_LEDGER_DATABASE_URL is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = parsed.database
        file_path = None if path in (None, "", ":memory:") or path.startswith("file:") else path
        if file_path is not None and not create and not Path(file_path).exists():
            raise ConfigError(missing_database_message(file_path))
        return _sqlite_engine(
            parsed.render_as_string(hide_password=False),
            None if create else file_path,
            # In-memory databases keep SQLite's own pool (one connection per thread).
            pool_class if file_path is not None else None,
        )
    if backend == "postgresql":
        return create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            isolation_level="READ COMMITTED",
            poolclass=pool_class,  # None: the dialect's default, QueuePool
            connect_args={} if connect_timeout is None else {"connect_timeout": connect_timeout},
        )
    raise ConfigError(f"unsupported database backend {backend!r} (use postgresql or sqlite)")


def _sqlite_engine(
    url: str, must_exist: str | None, pool_class: type[QueuePool] | None = None
) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 60.0}, poolclass=pool_class)

    if must_exist is not None:

        @event.listens_for(engine, "do_connect")
        def _open_existing(_dialect: Any, _record: Any, cargs: list[Any], cparams: Any) -> None:
            # Checked at every connect, not only above: the file may be gone since (a restore
            # half done, a moved volume), and sqlite3 would quietly make an empty one.
            if not Path(must_exist).exists():
                raise ConfigError(missing_database_message(must_exist))
            # mode=rw: open read-write, never create (closes the race with the check above).
            cargs[:] = [f"file:{quote(str(Path(must_exist).resolve()))}?mode=rw"]
            cparams["uri"] = True

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
