"""``db backup``: a consistent copy of the embedded database, for the restore drill.

SQLite only, through its online backup API (:mod:`audit_ledger.storage.backup`). On PostgreSQL
the server's own tools are the right ones — ``pg_dump -Fc`` (logical) or ``pg_basebackup``
(physical, with WAL archiving for point-in-time recovery) — so this refuses with a pointer to
them. Keys are never in a database backup: ``keys/`` is backed up separately (README, Backups).
"""

from __future__ import annotations

from pathlib import Path

from audit_ledger.errors import ConfigError
from audit_ledger.storage.backup import SqliteBackup, backup_sqlite, sqlite_path

__all__ = ["SqliteBackup", "backup_database"]


def backup_database(database_url: str, dest: Path) -> SqliteBackup:
    """Copy the SQLite database of ``database_url`` to ``dest`` (a new file)."""
    source = sqlite_path(database_url)
    if source is None:
        raise ConfigError(
            "db backup copies the embedded SQLite database only; back up PostgreSQL with "
            "pg_dump -Fc (or pg_basebackup) and keys/ separately (see README, Backups)"
        )
    return backup_sqlite(source, dest)
