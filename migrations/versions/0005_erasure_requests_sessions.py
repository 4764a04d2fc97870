"""Erasure requests that outlive a legal hold, and server-side console sessions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

* ``erasure_requests``: one row per erasure a privacy officer asked for (issue #14). The chain
  already records every erasure that ran (``ledger_operations``); this table is the work queue
  around it: a request is ``pending`` until it runs, ``blocked`` while a legal hold keeps some of
  the subject's data (it lists the holds), and ``done`` once nothing of it is left to erase.
  Releasing a hold resumes the requests it blocked. The subject is kept only as its blind index
  (``subject_ref``), never as the identifier itself. Not ledger evidence: its state changes.
* ``console_sessions``: the console's server-side sessions (DESIGN §8). The cookie carries a
  random session id; the table keeps only its SHA-256, so a database reader cannot resume a
  session. Signing out sets ``ended_at`` for every worker at once.

Both are bookkeeping the serving role updates (``db grants`` gives it SELECT, INSERT, UPDATE and,
for sessions, DELETE of expired rows); neither is protected by the append-only guards.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erasure_requests",
        sa.Column("request_id", sa.String(40), primary_key=True),
        sa.Column("subject_ref", sa.String(64), nullable=False),  # blind index of the user id
        sa.Column("categories", sa.Text, nullable=True),  # JSON list; NULL: every erasable one
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("requested_at", sa.String(27), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),  # pending | blocked | done
        sa.Column("blocked_by", sa.Text, nullable=True),  # JSON list of hold ids
        sa.Column("last_op_seq", sa.BigInteger, nullable=True),  # the latest erasure entry
        sa.Column("updated_at", sa.String(27), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'blocked', 'done')", name="erasure_requests_state"
        ),
    )
    op.create_index("erasure_requests_by_state", "erasure_requests", ["state", "requested_at"])
    op.create_index("erasure_requests_by_subject", "erasure_requests", ["subject_ref"])
    op.create_table(
        "console_sessions",
        sa.Column("sid_hash", sa.LargeBinary, primary_key=True),  # SHA-256 of the cookie's id
        sa.Column("principal", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.LargeBinary, nullable=False),  # the token signed in with
        sa.Column("issued_at", sa.BigInteger, nullable=False),  # unix seconds
        sa.Column("seen_at", sa.BigInteger, nullable=False),
        sa.Column("ended_at", sa.BigInteger, nullable=True),  # signed out
    )
    op.create_index("console_sessions_by_principal", "console_sessions", ["principal"])


def downgrade() -> None:
    raise RuntimeError("the audit ledger's schema cannot be downgraded: it would destroy history")
