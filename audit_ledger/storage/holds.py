"""Legal holds as stored (``legal_holds``): scope, range, and the seqs that created and
released them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    insert,
    select,
    text,
    update,
)

from audit_ledger.storage.database import (
    Database,
    Transaction,
)
from audit_ledger.storage.schema import (
    legal_holds,
)


@dataclass(frozen=True, slots=True)
class StoredHold:
    hold_id: str
    scope: str
    scope_value: str | None
    since: str | None
    until: str | None
    created_by: str
    created_seq: int
    released_by: str | None = None
    released_seq: int | None = None


def _hold(row: Any) -> StoredHold:
    return StoredHold(
        row.hold_id,
        row.scope,
        row.scope_value,
        row.since,
        row.until,
        row.created_by,
        row.created_seq,
        row.released_by,
        row.released_seq,
    )


class HoldReads(Database):
    """Legal-hold listing."""

    def holds(self) -> list[StoredHold]:
        with self.reader() as conn:
            rows = conn.execute(select(legal_holds).order_by(legal_holds.c.hold_id))
            return [_hold(r) for r in rows]


class HoldWrites(Transaction):
    """Legal holds under the head lock."""

    def active_holds(self) -> list[StoredHold]:
        rows = self.conn.execute(
            select(legal_holds)
            .where(legal_holds.c.released_seq.is_(None))
            .order_by(legal_holds.c.hold_id)
        )
        return [_hold(r) for r in rows]

    def insert_hold(self, hold: StoredHold) -> None:
        self.conn.execute(
            insert(legal_holds).values(
                hold_id=hold.hold_id,
                scope=hold.scope,
                scope_value=hold.scope_value,
                since=hold.since,
                until=hold.until,
                created_by=hold.created_by,
                created_seq=hold.created_seq,
            )
        )

    def release_hold(self, hold_id: str, by: str, op_seq: int) -> bool:
        """Release an active hold as entry ``op_seq`` authorises (on PostgreSQL through the
        owner role's ``audit_ledger_release_hold``, which checks that entry's commitment)."""
        if self.dialect == "postgresql":
            return bool(
                self.conn.execute(
                    text("SELECT audit_ledger_release_hold(:op, :hold, :by)"),
                    {"op": op_seq, "hold": hold_id, "by": by},
                ).scalar_one()
            )
        result = self.conn.execute(
            update(legal_holds)
            .where(legal_holds.c.hold_id == hold_id, legal_holds.c.released_seq.is_(None))
            .values(released_by=by, released_seq=op_seq)
        )
        return bool(result.rowcount)
