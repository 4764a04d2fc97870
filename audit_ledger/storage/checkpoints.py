"""Signed checkpoints as stored (``checkpoints``): tree size, root hash and the signed note."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    insert,
    select,
)

from audit_ledger.storage.database import (
    Database,
    Transaction,
)
from audit_ledger.storage.schema import (
    checkpoints,
)


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    tree_size: int
    root_hash: bytes
    note: str


def _checkpoint(row: Any) -> StoredCheckpoint:
    root = row.root_hash
    # Any other type is left as it is for verification to report (SQLite stores any type).
    return StoredCheckpoint(
        row.tree_size, bytes(root) if isinstance(root, memoryview) else root, row.note
    )


class CheckpointReads(Database):
    """Checkpoint reads."""

    def checkpoints(self, *, after_size: int = -1, limit: int = 1000) -> list[StoredCheckpoint]:
        with self.reader() as conn:
            rows = conn.execute(
                select(checkpoints)
                .where(checkpoints.c.tree_size > after_size)
                .order_by(checkpoints.c.tree_size)
                .limit(limit)
            )
            return [_checkpoint(r) for r in rows]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        with self.reader() as conn:
            r = conn.execute(
                select(checkpoints).order_by(checkpoints.c.tree_size.desc()).limit(1)
            ).one_or_none()
            return _checkpoint(r) if r else None


class CheckpointWrites(Transaction):
    """Checkpoint writes under the head lock."""

    def checkpoint(self, tree_size: int) -> StoredCheckpoint | None:
        row = self.conn.execute(
            select(checkpoints).where(checkpoints.c.tree_size == tree_size)
        ).one_or_none()
        return _checkpoint(row) if row is not None else None

    def insert_checkpoint(self, checkpoint: StoredCheckpoint) -> bool:
        """Store a checkpoint unless one for that size exists; True when inserted."""
        exists = self.conn.execute(
            select(checkpoints.c.tree_size).where(checkpoints.c.tree_size == checkpoint.tree_size)
        ).first()
        if exists is not None:
            return False
        self.conn.execute(
            insert(checkpoints).values(
                tree_size=checkpoint.tree_size,
                root_hash=checkpoint.root_hash,
                note=checkpoint.note,
            )
        )
        return True
