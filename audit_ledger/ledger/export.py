"""Exporting the log for an auditor without network access: the leaves covered by the latest
checkpoint, written into an auditor's mirror and checked exactly as ``audit-ledger audit``
checks a server. Headers only, but records leave the service, so the export is recorded like
any read (``leaves_exported``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from audit_ledger.auditor.mirror import Mirror
from audit_ledger.auditor.monitor import AuditReport, audit_server
from audit_ledger.core.policy import key_history_policy

if TYPE_CHECKING:
    from audit_ledger.ledger.log import Log
    from audit_ledger.ledger.operations import Operations


class LedgerSource:
    """The auditor's reads straight from a ledger's database, as a
    :class:`~audit_ledger.auditor.monitor.LogSource` (run in a thread, so the next page is read
    while the current one is checked); over HTTP the source is the client."""

    def __init__(self, log: Log) -> None:
        self.log = log

    async def get_checkpoint(self) -> str | None:
        # As served over HTTP: with the witnesses' cosignatures, so a policy quorum can be met.
        return await asyncio.to_thread(self.log.cosigned_checkpoint)

    async def get_leaves(self, start: int, end: int) -> list[tuple[int, bytes]]:
        return await asyncio.to_thread(self.log.leaves, start, end)

    async def inclusion_proof(self, seq: int, tree_size: int) -> list[bytes]:
        return await asyncio.to_thread(self.log.inclusion_proof, seq, tree_size)

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        return await asyncio.to_thread(self.log.consistency_proof, first, second)


def export_to_mirror(
    log: Log, operations: Operations, mirror: Mirror, *, inclusion_checks: int, principal: str
) -> AuditReport:
    """Bring ``mirror`` up to the latest checkpoint, checking as an audit does; recorded."""
    # Every key the ledger has signed with: a mirror exported before a checkpoint-key rotation
    # stays usable after it.
    trust = key_history_policy(log.key_history())
    report = asyncio.run(
        audit_server(LedgerSource(log), mirror, trust, inclusion_checks=inclusion_checks)
    )
    if report.new_leaves:
        operations.record(
            "leaves_exported",
            {"principal": principal, "tree_size": report.tree_size, "count": report.new_leaves},
        )
    return report
