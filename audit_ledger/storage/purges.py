"""Retention and erasure's tables: which payloads are still stored, and purging them
(``payload_purges`` records why, then the ``payloads`` row goes; the guard trigger checks it).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import (
    func,
    insert,
    select,
)

from audit_ledger.storage.database import (
    Transaction,
    chunks,
)
from audit_ledger.storage.entries import ENTRY_COLUMNS, StoredEntry, entry_from_row
from audit_ledger.storage.schema import (
    entries,
    payload_purges,
    payloads,
)


class PurgeWrites(Transaction):
    """Payload selection and purging under the head lock."""

    def payload_entries(
        self,
        *,
        category: str | None = None,
        recorded_before: str | None = None,
        key_ids: Sequence[str] | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[StoredEntry]:
        """Entries whose payload is still stored, in seq order, by category/age (a page after
        ``after_seq``) or by data key."""
        stmt = select(*ENTRY_COLUMNS).join(payloads, payloads.c.seq == entries.c.seq)
        if category is not None:
            stmt = stmt.where(entries.c.category == category)
        if recorded_before is not None:
            stmt = stmt.where(entries.c.recorded_at < recorded_before)
        if after_seq is not None:
            stmt = stmt.where(entries.c.seq > after_seq)
        if key_ids is None:
            stmt = stmt.order_by(entries.c.seq)
            if limit is not None:
                stmt = stmt.limit(limit)
            return [entry_from_row(r) for r in self.conn.execute(stmt)]
        out: list[StoredEntry] = []
        for part in chunks(sorted(set(key_ids))):
            out.extend(
                entry_from_row(r) for r in self.conn.execute(stmt.where(entries.c.key_id.in_(part)))
            )
        return sorted(out, key=lambda e: e.seq)

    def payload_counts(self, category: str) -> dict[str, int]:
        """Stored payloads per data key of ``category`` (keys with none are absent)."""
        rows = self.conn.execute(
            select(entries.c.key_id, func.count())
            .join(payloads, payloads.c.seq == entries.c.seq)
            .where(entries.c.category == category, entries.c.key_id.is_not(None))
            .group_by(entries.c.key_id)
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def purge_payloads(self, seqs: Sequence[int], op_seq: int, reason: str) -> None:
        """Record why each payload goes, then delete it (the guard trigger checks the record)."""
        for part in chunks(sorted(seqs)):
            self.conn.execute(
                insert(payload_purges),
                [{"seq": seq, "op_seq": op_seq, "reason": reason} for seq in part],
            )
            self.conn.execute(payloads.delete().where(payloads.c.seq.in_(part)))
