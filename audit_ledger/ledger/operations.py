"""The service's own records (``ledger_operations``) and small rules every use case shares.

Reads of records, retention runs, erasures, legal holds, key events and principal changes are
all entries the service appends about itself, written as :data:`SYSTEM_WRITER`. They go through
the same append pipeline as the bot's events (group commit in a serving process).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import Any, Protocol

import structlog
from sqlalchemy import event

from audit_ledger.core.timestamps import format_timestamp, normalise_timestamp
from audit_ledger.crypto.blind_index import BlindIndexer
from audit_ledger.errors import FormatError, ValidationError
from audit_ledger.ledger.appends.prepare import PreparedEvent, prepare_event
from audit_ledger.ledger.appends.write import Appender, Receipt
from audit_ledger.observability.loggers import get_logger
from audit_ledger.policy import LEDGER_OPERATIONS, Policy
from audit_ledger.storage.store import WriteTx

#: One line per operation the service records about itself, on the security tier (forwarded to
#: the SIEM by default): its event type and seq only — the record's data stays in the ledger.
ops_log = get_logger("security.operations")


def _said(event_type: str, seq: int) -> None:
    # Only where logging is set up (serve, scheduler): structlog's unconfigured default prints
    # to stdout, which is a command's output (``principals add`` prints a token there).
    if structlog.is_configured():
        ops_log.info("ledger_operation", event_type=event_type, seq=seq)


#: Writer name of the entries the service records about itself.
SYSTEM_WRITER = "audit-ledger"
#: Size bound of the service's own records (a retention run lists seq ranges and key ids).
SYSTEM_MAX_DATA_BYTES = 8 * 1024 * 1024

Clock = Callable[[], datetime]


def bad(field: str, problem: str) -> ValidationError:
    """A one-field validation error."""
    return ValidationError(f"{field}: {problem}", [{"field": field, "problem": problem}])


def timestamp_bound(name: str, value: str | None) -> str | None:
    """A caller's RFC 3339 bound in the ledger's canonical form (None stays None)."""
    if value is None:
        return None
    try:
        return normalise_timestamp(value)
    except FormatError:
        raise bad(name, "must be an RFC 3339 timestamp with offset") from None


class Submitter(Protocol):
    """Where appended events go: the group committer (or a direct append outside a server)."""

    def submit(self, events: Sequence[PreparedEvent], writer: str) -> Future[list[Receipt]]: ...


class Operations:
    """Builds and records ``ledger_operations`` entries."""

    def __init__(
        self,
        policy: Policy,
        indexer: BlindIndexer,
        clock: Clock,
        submitter: Submitter,
        appender: Appender,
    ) -> None:
        self.policy = policy
        self.indexer = indexer
        self.clock = clock
        self.submitter = submitter
        self.appender = appender

    def event(
        self,
        event_type: str,
        data: Mapping[str, Any],
        refs: Mapping[str, str] | None = None,
    ) -> PreparedEvent:
        """A prepared ``ledger_operations`` event written by the service itself; ``refs`` are
        header commitments (``core.commitments``) the database checks the change against."""
        now = self.clock()
        raw = {
            "event_id": str(uuid.uuid4()),
            "category": LEDGER_OPERATIONS,
            "event_type": event_type,
            "occurred_at": format_timestamp(now),
            "correlation_id": None,
            "data": dict(data),
        }
        prepared = prepare_event(
            raw,
            self.policy,
            self.indexer,
            max_data_bytes=SYSTEM_MAX_DATA_BYTES,
            allow_system=True,
            now=now,  # the policy's occurred_at rules against the clock that stamped it
        )
        if refs:
            prepared.refs = {**prepared.refs, **refs}
        return prepared

    def record_in(self, tx: WriteTx, op: PreparedEvent) -> int:
        """Append ``op`` inside ``tx`` (its head locked), so that the change it records commits
        with it or not at all; the seq it got."""
        seq = self.appender.append_locked(tx, [op], SYSTEM_WRITER)[0].seq
        # Said once the change it records is committed (never for a rolled-back one).
        event.listen(
            tx.conn,
            "commit",
            lambda _conn: _said(op.event_type, seq),
            once=True,
        )
        return seq

    def record(self, event_type: str, data: Mapping[str, Any]) -> Receipt:
        """Append one operation record and wait until it is committed."""
        receipt = self.submitter.submit([self.event(event_type, data)], SYSTEM_WRITER).result()[0]
        _said(event_type, receipt.seq)
        return receipt
