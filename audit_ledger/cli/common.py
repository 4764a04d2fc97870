"""What every command shares: exit codes, the one-line error, opening the ledger."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audit_ledger.ledger.service import Ledger
    from audit_ledger.settings import Settings

EXIT_OK, EXIT_TAMPERED, EXIT_ERROR = 0, 1, 2
CLI_WRITER = "cli"
#: Parsing and validation run in this many processes at most: beyond that the committing
#: process is the bottleneck.
MAX_IMPORT_JOBS = 4
PARALLEL_IMPORT_MIN_BYTES = 4 * 1024 * 1024
#: Where ``audit`` finds the auditor's token when no --token-file is given.
AUDIT_TOKEN_ENV = "AUDIT_LEDGER_TOKEN"  # noqa: S105 - the variable's name, not a secret


class CliError(Exception):
    """A one-line error for the user; exit code 2."""


def _err(message: str) -> None:
    print(f"audit-ledger: error: {message}", file=sys.stderr)


@contextmanager
def _ledger(settings: Settings) -> Iterator[Ledger]:
    # Imported by the commands that open a ledger, not by every command: the ledger's imports
    # (SQLAlchemy, psycopg, the use cases) are most of a command's start-up (issue #16).
    from audit_ledger.ledger.service import Ledger  # noqa: PLC0415

    ledger = Ledger.open(settings)
    try:
        ledger.check_schema()
        yield ledger
    finally:
        ledger.close()
