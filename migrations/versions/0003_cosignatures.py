"""Witness cosignatures of checkpoints (C2SP tlog-cosignature, DESIGN §7).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05

One row per cosignature a witness returned for a stored checkpoint: the witness's key name and
key ID, the cosignature's timestamp and its complete note signature line. The served checkpoint
is the stored note with these lines appended. Rows are append-only, guarded like the other
ledger tables (a cosignature, once stored, is evidence and never changes).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLE = "checkpoint_cosignatures"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column(
            "tree_size",
            sa.BigInteger,
            sa.ForeignKey("checkpoints.tree_size"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("witness", sa.String(255), primary_key=True),  # the cosigner's key name
        sa.Column("key_hash", sa.String(8), primary_key=True),  # its 4-byte key ID, hex
        sa.Column("timestamp", sa.BigInteger, nullable=False),  # the cosignature's own time
        sa.Column("line", sa.Text, nullable=False),  # the note signature line, verbatim
        sa.Column("received_at", sa.String(27), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        for name, timing, level in (
            ("no_change", "BEFORE UPDATE OR DELETE", "FOR EACH ROW"),
            ("no_truncate", "BEFORE TRUNCATE", "FOR EACH STATEMENT"),
        ):
            op.execute(
                f"CREATE TRIGGER {TABLE}_{name} {timing} ON {TABLE} {level} "
                "EXECUTE FUNCTION audit_ledger_reject()"
            )
            op.execute(f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER {TABLE}_{name}")
    else:
        for name, timing in (("update", "BEFORE UPDATE"), ("delete", "BEFORE DELETE")):
            op.execute(
                f"CREATE TRIGGER {TABLE}_{name} {timing} ON {TABLE} "
                f"BEGIN SELECT RAISE(ABORT, 'audit-ledger: {name} on {TABLE} is forbidden'); END"
            )


def downgrade() -> None:
    raise RuntimeError("the audit ledger's schema cannot be downgraded: it would destroy history")
