"""The ledger's own database as an audit's :class:`~audit_ledger.auditor.monitor.LogSource`
(``audit-ledger export``); over HTTP the source is
:class:`~audit_ledger.client.AuditLedgerClient`."""

from __future__ import annotations

import asyncio

from audit_ledger.ledger.service import Ledger


class LedgerSource:
    """The auditor's reads straight from a ledger's database (run in a thread, so the next page
    is read while the current one is checked)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def get_checkpoint(self) -> str | None:
        latest = await asyncio.to_thread(self.ledger.latest_checkpoint)
        return latest.note if latest is not None else None

    async def get_leaves(self, start: int, end: int) -> list[tuple[int, bytes]]:
        return await asyncio.to_thread(self.ledger.leaves, start, end)

    async def inclusion_proof(self, seq: int, tree_size: int) -> list[bytes]:
        return await asyncio.to_thread(self.ledger.inclusion_proof, seq, tree_size)

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        return await asyncio.to_thread(self.ledger.consistency_proof, first, second)
