"""Range reads for C2SP tlog-tiles: one tile's stored hashes in one SELECT.

A tile at level L is ``count`` consecutive complete-subtree hashes at tree level ``8·L``
(c2sp.org/tlog-tiles). Level 0 is ``entries.leaf_hash``, higher levels ``tree_nodes``; both are
keyed by their index, so a tile is one primary-key range scan and nothing is rehashed.
"""

from __future__ import annotations

from sqlalchemy import select

from audit_ledger.errors import StorageError
from audit_ledger.storage.database import Database, as_bytes
from audit_ledger.storage.schema import entries, tree_nodes


class TileReads(Database):
    """Stored hashes and leaves by index range (each call its own read transaction)."""

    def hash_range(self, level: int, start: int, count: int) -> list[bytes]:
        """The stored hashes ``(level, start) … (level, start + count - 1)``, in order."""
        if level == 0:
            stmt = (
                select(entries.c.leaf_hash)
                .where(entries.c.seq >= start, entries.c.seq < start + count)
                .order_by(entries.c.seq)
            )
        else:
            stmt = (
                select(tree_nodes.c.hash)
                .where(
                    tree_nodes.c.level == level,
                    tree_nodes.c.idx >= start,
                    tree_nodes.c.idx < start + count,
                )
                .order_by(tree_nodes.c.idx)
            )
        with self.reader() as conn:
            hashes = [as_bytes(row[0]) for row in conn.execute(stmt)]
        if len(hashes) != count:
            raise StorageError("a stored tree hash is missing")
        return hashes
