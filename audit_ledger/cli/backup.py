"""``audit-ledger db backup DEST``: the embedded database copied with SQLite's online backup
API (never a bare file copy of a WAL database), ready for the restore drill in the README."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from audit_ledger.cli.common import EXIT_OK

if TYPE_CHECKING:
    from audit_ledger.settings import Settings


def cmd_db_backup(args: argparse.Namespace, settings: Settings) -> int:
    from audit_ledger.ledger.backup import backup_database  # noqa: PLC0415

    done = backup_database(settings.database_url, Path(args.dest))
    print(
        f"backed up {done.size} entries (schema {done.revision}) to {done.dest}; back up "
        f"{settings.keys_dir} separately: without kek.key no payload can be read",
        file=sys.stderr,
    )
    return EXIT_OK


def add_backup_parser(db: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    backup = db.add_parser(
        "backup",
        help="consistent copy of the embedded SQLite database (online backup API)",
        description="Copy the SQLite database to DEST (a new file) with SQLite's online backup "
        "API while the service runs. PostgreSQL: use pg_dump or pg_basebackup instead. Keys "
        "are not included: back up the keys directory separately.",
    )
    backup.add_argument("dest", help="the backup file to create (never overwritten)")
    backup.set_defaults(func=cmd_db_backup)
