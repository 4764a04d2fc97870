"""The storage layer's plumbing: transactions over one engine, driver access and error mapping.

:class:`Database` opens read transactions; :class:`~audit_ledger.storage.store.Store` adds the
one write transaction shape (head locked first, DESIGN §5). The per-table repositories
(``entries``, ``keys``, ``principals``, ``holds``, ``checkpoints``, ``purges``, ``integrity``)
build on :class:`Database` (reads) and :class:`Transaction` (writes under the head lock). The hot
paths (append, verify) run fixed statements straight on the driver through :func:`raw_rows` and
:func:`raw_exec`, and :func:`translate_errors` maps every driver error to this layer's errors.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import psycopg
from sqlalchemy import (
    Connection,
    Engine,
)
from sqlalchemy.exc import DBAPIError, OperationalError

from audit_ledger.errors import DatabaseUnavailableError, StorageError


def chunks(items: Sequence[Any], size: int = 1000) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def as_bytes(value: bytes | memoryview) -> bytes:
    # psycopg's binary protocol and sqlite3 already give bytes: no copy then.
    return value if type(value) is bytes else bytes(value)


def driver_of(conn: Connection) -> Any:
    """The DBAPI connection under a SQLAlchemy one (psycopg or sqlite3)."""
    driver = conn.connection.driver_connection
    if driver is None:  # pragma: no cover - the pool always hands out a live connection
        raise StorageError("no driver connection")
    return driver


def raw_exec(conn: Connection, query: str, params: Sequence[Any]) -> int:
    """Execute a fixed statement straight on the driver (``?`` placeholders); the row count."""
    driver = driver_of(conn)
    if conn.dialect.name == "postgresql":
        with driver.cursor() as cursor:
            cursor.execute(query.replace("?", "%s"), params)
            return int(cursor.rowcount)
    cursor = driver.cursor()
    try:
        cursor.execute(query, params)
        return int(cursor.rowcount)
    finally:
        cursor.close()


def raw_rows(conn: Connection, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of a fixed query straight from the driver (``?`` placeholders).

    Verification streams the whole log through a few such queries; skipping SQLAlchemy's
    per-row processing, and on PostgreSQL using the binary protocol (bytea as raw bytes instead
    of hex text), makes that stream several times cheaper.
    """
    driver = driver_of(conn)
    if conn.dialect.name == "postgresql":
        with driver.cursor(binary=True) as cursor:
            cursor.execute(query.replace("?", "%s"), params)
            return list(cursor.fetchall())
    cursor = driver.cursor()
    try:
        return list(cursor.execute(query, params).fetchall())
    finally:
        cursor.close()


@contextmanager
def translate_errors() -> Iterator[None]:
    """Map driver errors to the storage layer's errors (connectivity vs everything else) —
    through SQLAlchemy or straight from the driver (the append and verify paths)."""
    try:
        yield
    except OperationalError as exc:
        if exc.connection_invalidated or _is_connect_error(str(exc.orig)):
            raise DatabaseUnavailableError("database is unreachable") from exc
        raise StorageError(f"database error: {exc.orig.__class__.__name__}") from exc
    except DBAPIError as exc:
        raise StorageError(f"database error: {exc.orig.__class__.__name__}") from exc
    except (psycopg.Error, sqlite3.Error) as exc:
        operational = isinstance(exc, psycopg.OperationalError | sqlite3.OperationalError)
        if operational and _is_connect_error(str(exc)):
            raise DatabaseUnavailableError("database is unreachable") from exc
        raise StorageError(f"database error: {exc.__class__.__name__}") from exc


class _DropIgnoredDriverErrors(logging.Filter):
    """Drops psycopg's "error ignored …" warnings: the second failure of a failed block.

    When the block of a ``COPY`` or a pipeline raises — typically because the server ended the
    session in the middle (a failover, ``pg_terminate_backend``) — psycopg still tries to end
    the copy or sync the pipeline on the dead connection, fails again, logs *that* failure as
    "error ignored terminating <psycopg.Copy [BAD] …>: the connection is lost", and re-raises
    the first one, which :func:`translate_errors` maps like any other driver error. The warning
    only repeats it in the driver's words; in a process without logging handlers (the CLI)
    Python's last-resort handler printed it raw on stderr, above the one-line error. psycopg
    logs "error ignored" only while another exception is propagating, so nothing is lost.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("error ignored "))


# psycopg logs through this one logger (a filter on a logger sees only its own records).
logging.getLogger("psycopg").addFilter(_DropIgnoredDriverErrors())


def _is_connect_error(message: str) -> bool:
    text = message.lower()
    return any(
        marker in text
        for marker in ("connection", "could not connect", "server closed", "unable to open")
    )


class Database:
    """Read transactions over one SQLAlchemy engine (the base of every repository)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()

    def release_connections(self) -> bool:
        """Close every pooled connection, so that a process forked next inherits none (a
        PostgreSQL connection is a session: the child must not share it, nor end it); the next
        use reconnects. False, closing nothing, while a connection is in use, with a pool that
        cannot tell, and always on SQLite: SQLite keeps per-process books of the files it has
        open (locks, the WAL index), which a fork copies whoever opened them — any connection
        to the same file in this process, not only this engine's — and a child that opens the
        file again then works from books that are not its own."""
        checkedout = getattr(self.engine.pool, "checkedout", None)
        if self.dialect == "sqlite" or checkedout is None or checkedout() != 0:
            return False
        self.engine.dispose()
        return True

    @contextmanager
    def reader(self) -> Iterator[Connection]:
        with translate_errors(), self.engine.connect() as conn, conn.begin():
            yield conn


class Transaction:
    """One open write transaction, the head already locked (the base of the write mixins)."""

    def __init__(self, conn: Connection, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect

    def driver(self) -> psycopg.Connection[Any]:
        return cast(psycopg.Connection[Any], driver_of(self.conn))
