"""Witness cosignatures of stored checkpoints (``checkpoint_cosignatures``, migration 0003).

One row per verified cosignature: the checkpoint's tree size, the witness's key name and key ID
(hex), the cosignature's own timestamp, its note signature line verbatim and when it arrived.
Rows are append-only (guard triggers); the latest size a witness cosigned is the largest tree
size it has a row for — what the next submission's old size and proof start from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select

from audit_ledger.storage.database import Database, Transaction
from audit_ledger.storage.schema import checkpoint_cosignatures as cosigs


@dataclass(frozen=True, slots=True)
class StoredCosignature:
    tree_size: int
    witness: str
    key_hash: str  # 8 hex digits
    timestamp: int
    line: str
    received_at: str


def _cosignature(row: Any) -> StoredCosignature:
    return StoredCosignature(
        int(row.tree_size),
        row.witness,
        row.key_hash,
        int(row.timestamp),
        row.line,
        row.received_at,
    )


class CosignatureReads(Database):
    """Cosignature reads."""

    def cosignatures(self, tree_size: int) -> list[StoredCosignature]:
        """The cosignatures of the checkpoint of ``tree_size``, in a stable order."""
        with self.reader() as conn:
            rows = conn.execute(
                select(cosigs)
                .where(cosigs.c.tree_size == tree_size)
                .order_by(cosigs.c.witness, cosigs.c.key_hash)
            )
            return [_cosignature(r) for r in rows]

    def latest_cosignatures(self) -> dict[tuple[str, str], StoredCosignature]:
        """Per ``(witness name, key ID hex)``: its cosignature of the largest tree size."""
        with self.reader() as conn:
            latest = (
                select(
                    cosigs.c.witness,
                    cosigs.c.key_hash,
                    func.max(cosigs.c.tree_size).label("tree_size"),
                )
                .group_by(cosigs.c.witness, cosigs.c.key_hash)
                .subquery()
            )
            rows = conn.execute(
                select(cosigs).join(
                    latest,
                    (cosigs.c.witness == latest.c.witness)
                    & (cosigs.c.key_hash == latest.c.key_hash)
                    & (cosigs.c.tree_size == latest.c.tree_size),
                )
            )
            return {(r.witness, r.key_hash): _cosignature(r) for r in rows}


class CosignatureWrites(Transaction):
    """Cosignature writes (inside :meth:`Store.writer`)."""

    def insert_cosignature(self, cosignature: StoredCosignature) -> bool:
        """Store a cosignature unless that witness key already cosigned that size."""
        exists = self.conn.execute(
            select(cosigs.c.tree_size).where(
                (cosigs.c.tree_size == cosignature.tree_size)
                & (cosigs.c.witness == cosignature.witness)
                & (cosigs.c.key_hash == cosignature.key_hash)
            )
        ).first()
        if exists is not None:
            return False
        self.conn.execute(
            insert(cosigs).values(
                tree_size=cosignature.tree_size,
                witness=cosignature.witness,
                key_hash=cosignature.key_hash,
                timestamp=cosignature.timestamp,
                line=cosignature.line,
                received_at=cosignature.received_at,
            )
        )
        return True
