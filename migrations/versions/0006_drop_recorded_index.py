"""Drop the ``(category, recorded_at)`` index of ``entries``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

``recorded_at`` never decreases along the log (DESIGN §3; verification checks it), so a range of
recording times is a range of seqs: the first seq recorded at or after a moment is found by a
binary search over the primary key (O(log n) point reads,
:func:`audit_ledger.storage.entries.first_seq_recorded_from`), and the category filter then uses
``(category, seq)``. Every appended entry paid for the dropped index — about 0.3 s of PostgreSQL
per 100k entries in a bulk import (issue #16), and ~8 % of the index bytes per entry. Dropping
an index rewrites no table. The downgrade builds it again.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_entries_category_recorded", table_name="entries")


def downgrade() -> None:
    op.create_index("ix_entries_category_recorded", "entries", ["category", "recorded_at"])
