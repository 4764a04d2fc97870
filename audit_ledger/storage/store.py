"""The store: every repository of the storage layer over one engine, and the write transaction.

Each repository lives beside the tables it owns (:mod:`~audit_ledger.storage.entries`,
:mod:`~audit_ledger.storage.appends`, :mod:`~audit_ledger.storage.keys`,
:mod:`~audit_ledger.storage.principals`, :mod:`~audit_ledger.storage.holds`,
:mod:`~audit_ledger.storage.erasure_requests`,
:mod:`~audit_ledger.storage.checkpoints`, :mod:`~audit_ledger.storage.cosignatures`,
:mod:`~audit_ledger.storage.purges`,
:mod:`~audit_ledger.storage.integrity`,
:mod:`~audit_ledger.storage.console_sessions`); :class:`Store` and :class:`WriteTx` only put them
together. Use cases do not depend on these classes but on the narrow protocols they declare
(``ledger/*``), which :class:`Store` and :class:`WriteTx` satisfy.

:meth:`Store.writer` opens the one write transaction shape the ledger uses (DESIGN §5): the head
row is locked first (``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), then
everything else is read and written under that lock, and the transaction commits or rolls back
as a whole. Reads use their own short transactions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from audit_ledger.storage.appends import AppendWrites
from audit_ledger.storage.checkpoints import CheckpointReads, CheckpointWrites
from audit_ledger.storage.console_sessions import ConsoleSessionRows
from audit_ledger.storage.cosignatures import CosignatureReads, CosignatureWrites
from audit_ledger.storage.database import translate_errors
from audit_ledger.storage.engine import WRITE_OPTION
from audit_ledger.storage.entries import EntryReads
from audit_ledger.storage.erasure_requests import ErasureRequestReads, ErasureRequestWrites
from audit_ledger.storage.holds import HoldReads, HoldWrites
from audit_ledger.storage.integrity import IntegrityReads
from audit_ledger.storage.keys import KeyReads, KeyWrites
from audit_ledger.storage.principals import PrincipalReads, PrincipalWrites
from audit_ledger.storage.purges import PurgeWrites
from audit_ledger.storage.tiles import TileReads


class WriteTx(
    AppendWrites,
    KeyWrites,
    PrincipalWrites,
    HoldWrites,
    ErasureRequestWrites,
    CheckpointWrites,
    PurgeWrites,
    CosignatureWrites,
):
    """Operations valid inside :meth:`Store.writer` (head already locked)."""


class Store(
    EntryReads,
    IntegrityReads,
    KeyReads,
    PrincipalReads,
    HoldReads,
    ErasureRequestReads,
    CheckpointReads,
    CosignatureReads,
    TileReads,
    ConsoleSessionRows,
):
    """Entry point of the storage layer over one SQLAlchemy engine."""

    @contextmanager
    def writer(self) -> Iterator[WriteTx]:
        """One write transaction, head locked first; commits on success, rolls back on error."""
        with translate_errors(), self.engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield WriteTx(conn, self.dialect)
