"""Look up blind indexes through a hash index on PostgreSQL.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

Every look-up of ``entry_refs`` by blind index — search by user or order id, a subject's
erasure, a principal's binding — is an equality on ``value`` (an HMAC under the index key that
covers the ref's name, so a value names one ref). The B-tree ``(name, value, seq)`` served
them, and every appended event paid for it twice (one row per ref): inserting random 64-char
keys into a large B-tree was the most expensive index of a bulk import (issue #16). A hash index
on ``value`` answers the same equality in O(1) page reads, and stores a 4-byte hash per row
instead of the key: measured on an import of 100k events, PostgreSQL's CPU fell from 2.59-2.72
to 1.96-2.34 s and the index from 26.7 MB to 7.5 MB (267 → 75 bytes per entry). The rows of one
value come back unordered; the queries order them by seq themselves, and a value has few rows
(one order, one customer's events).

SQLite keeps its B-tree: it has no hash indexes.

On a large log the new index is built in one statement that holds a lock on ``entry_refs``
against writes for its duration (a minute or two at 10M entries); run the upgrade in a
maintenance window, as for any index build.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index("ix_entry_refs_value", "entry_refs", ["value"], postgresql_using="hash")
    op.drop_index("ix_entry_refs_lookup", table_name="entry_refs")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index("ix_entry_refs_lookup", "entry_refs", ["name", "value", "seq"])
    op.drop_index("ix_entry_refs_value", table_name="entry_refs")
