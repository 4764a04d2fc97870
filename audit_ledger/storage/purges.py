"""Retention and erasure's tables: which payloads are still stored, and purging them
(``payload_purges`` records why, then the ``payloads`` row goes; the guard trigger checks it).

On PostgreSQL a purge with its key destructions is one call of the owner role's
``audit_ledger_purge`` (migration 0004), which checks the authorising entry's commitment and the
category's purge rule; the serving role cannot write ``payload_purges`` or delete payloads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import (
    BigInteger,
    String,
    bindparam,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql

from audit_ledger.storage.database import (
    Transaction,
    chunks,
)
from audit_ledger.storage.entries import (
    ENTRY_COLUMNS,
    StoredEntry,
    entry_from_row,
    first_seq_recorded_from,
)
from audit_ledger.storage.schema import (
    entries,
    payload_purges,
    payloads,
    purge_rules,
)


class PurgeWrites(Transaction):
    """Payload selection and purging under the head lock."""

    def first_seq_recorded_from(self, moment: str) -> int:
        """The seq where entries recorded at or after ``moment`` begin
        (:func:`~audit_ledger.storage.entries.first_seq_recorded_from`)."""
        return first_seq_recorded_from(self.conn, moment)

    def payload_entries(
        self,
        *,
        category: str | None = None,
        before_seq: int | None = None,
        key_ids: Sequence[str] | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[StoredEntry]:
        """Entries whose payload is still stored, in seq order, by category and seq range (a
        page after ``after_seq``, below ``before_seq``) or by data key."""
        stmt = select(*ENTRY_COLUMNS).join(payloads, payloads.c.seq == entries.c.seq)
        if category is not None:
            stmt = stmt.where(entries.c.category == category)
        if before_seq is not None:
            stmt = stmt.where(entries.c.seq < before_seq)
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

    def sync_purge_rules(self, rules: Sequence[tuple[str, str | None, bool]]) -> bool:
        """Make the stored purge rules ``rules`` if they differ and this connection may write
        them (the owner; SQLite); False when they differ and it may not (PostgreSQL's serving
        role: only the owner's ``db grants --apply`` changes what the database allows)."""
        current = {
            (r.category, r.retention, bool(r.erasable))
            for r in self.conn.execute(select(purge_rules))
        }
        if current == set(rules):
            return True
        if self.dialect == "postgresql":
            may = self.conn.execute(
                text(
                    "SELECT has_table_privilege('audit_ledger_purge_rules', 'INSERT')"
                    " AND has_table_privilege('audit_ledger_purge_rules', 'DELETE')"
                )
            ).scalar_one()
            if not may:
                return False
        self.conn.execute(purge_rules.delete())
        if rules:
            self.conn.execute(
                insert(purge_rules),
                [{"category": c, "retention": r, "erasable": e} for c, r, e in rules],
            )
        return True

    def purge(
        self,
        op_seq: int,
        reason: str,
        *,
        seqs: Sequence[int],
        key_ids: Sequence[str],
        when: str,
        destroy_keys: Callable[[Sequence[str], str, int], None],
    ) -> None:
        """Purge ``seqs`` and destroy ``key_ids`` as entry ``op_seq`` authorises (its header
        commits to exactly these): on PostgreSQL through ``audit_ledger_purge``, on SQLite as
        plain statements (``destroy_keys`` is the key repository's)."""
        if self.dialect == "postgresql":
            self.conn.execute(
                text("SELECT audit_ledger_purge(:op, :reason, :seqs, :keys, :when)").bindparams(
                    bindparam("seqs", type_=postgresql.ARRAY(BigInteger)),
                    bindparam("keys", type_=postgresql.ARRAY(String)),
                ),
                {
                    "op": op_seq,
                    "reason": reason,
                    "seqs": sorted(set(seqs)),
                    "keys": sorted(set(key_ids)),
                    "when": when,
                },
            )
            return
        if seqs:
            self.purge_payloads(seqs, op_seq, reason)
        if key_ids:
            destroy_keys(key_ids, when, op_seq)

    def purge_payloads(self, seqs: Sequence[int], op_seq: int, reason: str) -> None:
        """Record why each payload goes, then delete it (the guard trigger checks the record)."""
        for part in chunks(sorted(seqs)):
            self.conn.execute(
                insert(payload_purges),
                [{"seq": seq, "op_seq": op_seq, "reason": reason} for seq in part],
            )
            self.conn.execute(payloads.delete().where(payloads.c.seq.in_(part)))
