"""A consistent copy of the embedded SQLite database, made with SQLite's online backup API.

A bare file copy of a WAL database is not a backup: committed transactions may still sit in
``-wal`` (not yet checkpointed into the main file), and a copy taken while a writer commits can
mix pages of two states. ``sqlite3.Connection.backup`` (https://sqlite.org/backup.html) copies
the pages of one read snapshot instead; in WAL mode the reader holds that snapshot without
blocking writers, so appends go on while it runs. The copy is written beside the destination,
switched to a rollback journal (one self-contained file, no ``-wal``/``-shm`` to carry along),
checked with ``PRAGMA quick_check`` and fsynced (mode 0600 from the start), and only then linked
into place: a ``DEST`` that exists is always a whole backup.

PostgreSQL has its own tools (``pg_dump``, ``pg_basebackup``); this module is for SQLite only.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlalchemy.engine import make_url

from audit_ledger.durable import fsync_dir
from audit_ledger.errors import ConfigError, StorageError
from audit_ledger.storage.engine import missing_database_message, normalise_url

__all__ = ["SqliteBackup", "backup_sqlite", "sqlite_path"]


@dataclass(frozen=True, slots=True)
class SqliteBackup:
    """What was copied: the log size and schema revision of the snapshot, and where to."""

    dest: Path
    size: int
    revision: str | None


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL; None for any other backend (or an in-memory database)."""
    parsed = make_url(normalise_url(database_url))
    if parsed.get_backend_name() != "sqlite":
        return None
    if parsed.database in (None, "", ":memory:"):
        raise ConfigError("an in-memory SQLite database cannot be backed up")
    return Path(parsed.database)


def backup_sqlite(source: Path, dest: Path) -> SqliteBackup:
    """Copy ``source`` to ``dest`` (which must not exist) through the online backup API."""
    if not source.exists():
        raise ConfigError(missing_database_message(str(source)))
    if dest.exists() or dest.is_symlink():
        raise ConfigError(f"{dest} exists: a backup never overwrites a file; choose a new name")
    if not dest.parent.is_dir():
        raise ConfigError(f"{dest.parent} is not a directory")
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        # Created 0600 before a byte is written: ciphertext and blind indexes, the operator's.
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        size, revision = _copy(source, partial)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        # link, not rename: fails if DEST appeared meanwhile instead of replacing it.
        try:
            os.link(partial, dest)
        except FileExistsError:
            raise ConfigError(f"{dest} exists: a backup never overwrites a file") from None
        fsync_dir(dest.parent)
    except sqlite3.Error as exc:
        raise StorageError(f"backup failed: {exc.__class__.__name__}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {dest}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return SqliteBackup(dest, size, revision)


def _copy(source: Path, partial: Path) -> tuple[int, str | None]:
    # mode=rw: the source is opened, never created (a typo must not make an empty ledger).
    src = sqlite3.connect(f"file:{quote(str(source.resolve()))}?mode=rw", uri=True, timeout=60.0)
    dst = sqlite3.connect(partial, isolation_level=None)
    try:
        src.execute("PRAGMA busy_timeout=60000")
        # pages=-1: every page in one step, so the whole copy comes from one read snapshot.
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode=DELETE")
        check = dst.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise StorageError("the backup copy failed SQLite's quick_check; nothing was written")
        size, revision = _describe(dst)
    finally:
        dst.close()
        src.close()
    return size, revision


def _describe(conn: sqlite3.Connection) -> tuple[int, str | None]:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "ledger_head" not in tables:
        raise ConfigError("the source is not an audit-ledger database (no ledger_head table)")
    head = conn.execute("SELECT size FROM ledger_head").fetchone()
    version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return int(head[0]) if head else 0, version[0] if version else None
