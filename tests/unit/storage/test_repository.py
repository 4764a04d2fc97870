"""Driver errors become the storage layer's errors (audit_ledger.storage.repository).

The append and verify paths call the driver directly (COPY, the one-statement write, binary
reads), so its exceptions must be mapped as SQLAlchemy's are: a lost server is "unavailable"
(the API's 503), anything else a storage error — never a raw driver exception (a 500).
"""

from __future__ import annotations

import logging
import sqlite3

import psycopg
import pytest

from audit_ledger.errors import DatabaseUnavailableError, StorageError
from audit_ledger.storage.database import translate_errors


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.OperationalError("consuming input failed: connection to server lost"),
        sqlite3.OperationalError("unable to open database file"),
    ],
)
def test_a_lost_database_is_unavailable(error: Exception) -> None:
    with pytest.raises(DatabaseUnavailableError), translate_errors():
        raise error


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.DataError("invalid input"),
        psycopg.OperationalError("canceling statement due to statement timeout"),
        sqlite3.OperationalError("database is locked"),
        sqlite3.IntegrityError("UNIQUE constraint failed"),
    ],
)
def test_other_driver_errors_are_storage_errors(error: Exception) -> None:
    with pytest.raises(StorageError) as caught, translate_errors():
        raise error
    assert not isinstance(caught.value, DatabaseUnavailableError)
    assert str(caught.value) == f"database error: {type(error).__name__}"


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), translate_errors():
        raise KeyError("not a database error")


def test_the_drivers_ignored_cleanup_errors_are_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When a COPY or pipeline block fails on a lost session, psycopg's attempt to end it fails
    too; psycopg logs that second error as "error ignored …" and re-raises the first, which
    translate_errors maps. The storage layer drops those warnings (the CLI, which configures no
    logging, printed them raw on stderr next to its one-line error) — and only those."""
    caplog.set_level(logging.DEBUG)
    driver = logging.getLogger("psycopg")
    lost = psycopg.OperationalError("the connection is lost")
    driver.warning("error ignored terminating %r: %s", "<psycopg.Copy [BAD]>", lost)
    driver.warning("error ignored exiting %r: %s", "<psycopg.Pipeline [BAD]>", lost)
    driver.warning("error ignored in rollback of %s: %s", "<psycopg.Transaction>", lost)
    driver.warning("query cancellation failed: %s", lost)
    assert [r.getMessage() for r in caplog.records] == [
        "query cancellation failed: the connection is lost"
    ]
