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

Built here, the index holds a lock on ``entry_refs`` against writes for the whole build (16.7 s
on a 10M-entry ledger on a 2-core box, during which appends waited). On a large log, build it
beforehand without that lock, while the service runs, and the upgrade keeps it
(docs/scaling.md, "Upgrading a large log")::

    CREATE INDEX CONCURRENTLY ix_entry_refs_value ON entry_refs USING hash (value);

A concurrent build that failed or was interrupted leaves an invalid index under that name;
the upgrade drops and rebuilds it, as it does an index of that name that is not this one.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEX = "ix_entry_refs_value"


def _built_beforehand() -> bool | None:
    """True: a valid hash index on ``entry_refs (value)`` is there already; False: an index of
    that name is there but is not one (invalid, or another definition); None: none is."""
    row = (
        op.get_bind()
        .execute(
            text(
                "SELECT i.indisvalid AND i.indrelid = 'entry_refs'::regclass"
                " AND pg_get_indexdef(i.indexrelid) LIKE '%USING hash (value)'"
                " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"
            ),
            {"name": INDEX},
        )
        .first()
    )
    return None if row is None else bool(row[0])


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    found = _built_beforehand()
    if found is False:
        op.drop_index(INDEX)
    if not found:
        op.create_index(INDEX, "entry_refs", ["value"], postgresql_using="hash")
    op.drop_index("ix_entry_refs_lookup", table_name="entry_refs")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index("ix_entry_refs_lookup", "entry_refs", ["name", "value", "seq"])
    op.drop_index(INDEX, table_name="entry_refs")
