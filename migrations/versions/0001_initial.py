"""Initial ledger schema with guard triggers on both backends.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

The DDL is frozen here on purpose (not generated from the live models at run time), so that a
later change to the models can never silently alter what this revision did.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = ("entries", "entry_refs", "tree_nodes", "checkpoints", "payload_purges")
TS = sa.String(27)

# --- PostgreSQL guards -------------------------------------------------------------------------
# ENABLE ALWAYS: the triggers fire even under session_replication_role = replica (DESIGN §5).
PG_FUNCTIONS = [
    """
    CREATE OR REPLACE FUNCTION audit_ledger_reject() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'audit-ledger: % on % is forbidden (append-only ledger)',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'P0001';
    END $$
    """,
    """
    CREATE OR REPLACE FUNCTION audit_ledger_guard_payload_delete() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF NOT EXISTS (SELECT 1 FROM payload_purges WHERE seq = OLD.seq) THEN
        RAISE EXCEPTION 'audit-ledger: payload % may only be deleted once its purge is recorded',
          OLD.seq USING ERRCODE = 'P0001';
      END IF;
      RETURN OLD;
    END $$
    """,
    """
    CREATE OR REPLACE FUNCTION audit_ledger_guard_data_key_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.key_id <> OLD.key_id OR NEW.category <> OLD.category
         OR NEW.scope_kind <> OLD.scope_kind OR NEW.scope_value <> OLD.scope_value
         OR NEW.kek_id <> OLD.kek_id OR NEW.created_at <> OLD.created_at
         OR NEW.uses < OLD.uses
         OR (NEW.wrapped IS NOT NULL AND NEW.wrapped IS DISTINCT FROM OLD.wrapped)
         OR (OLD.destroyed_at IS NOT NULL AND (NEW.destroyed_at IS DISTINCT FROM OLD.destroyed_at
             OR NEW.destroyed_by_seq IS DISTINCT FROM OLD.destroyed_by_seq))
         OR (NEW.wrapped IS NULL AND (NEW.destroyed_at IS NULL OR NEW.destroyed_by_seq IS NULL))
      THEN
        RAISE EXCEPTION 'audit-ledger: data key % may only count uses or be destroyed',
          OLD.key_id USING ERRCODE = 'P0001';
      END IF;
      RETURN NEW;
    END $$
    """,
    """
    CREATE OR REPLACE FUNCTION audit_ledger_guard_hold_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF OLD.released_seq IS NOT NULL
         OR NEW.hold_id <> OLD.hold_id OR NEW.scope <> OLD.scope
         OR NEW.scope_value IS DISTINCT FROM OLD.scope_value
         OR NEW.since IS DISTINCT FROM OLD.since OR NEW.until IS DISTINCT FROM OLD.until
         OR NEW.created_by <> OLD.created_by OR NEW.created_seq <> OLD.created_seq
      THEN
        RAISE EXCEPTION 'audit-ledger: a legal hold may only be released, once'
          USING ERRCODE = 'P0001';
      END IF;
      RETURN NEW;
    END $$
    """,
    """
    CREATE OR REPLACE FUNCTION audit_ledger_guard_head_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.id <> OLD.id OR NEW.size < OLD.size THEN
        RAISE EXCEPTION 'audit-ledger: the ledger head only grows' USING ERRCODE = 'P0001';
      END IF;
      RETURN NEW;
    END $$
    """,
]


def _pg_trigger(table: str, name: str, timing: str, function: str, row: bool = True) -> list[str]:
    level = "FOR EACH ROW" if row else "FOR EACH STATEMENT"
    return [
        f"CREATE TRIGGER {table}_{name} {timing} ON {table} {level} EXECUTE FUNCTION {function}()",
        f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_{name}",
    ]


def _pg_guards() -> list[str]:
    sql = [s.strip() for s in PG_FUNCTIONS]
    for table in APPEND_ONLY:
        sql += _pg_trigger(table, "no_change", "BEFORE UPDATE OR DELETE", "audit_ledger_reject")
    for table in (*APPEND_ONLY, "payloads", "data_keys", "ledger_head", "legal_holds"):
        sql += _pg_trigger(table, "no_truncate", "BEFORE TRUNCATE", "audit_ledger_reject", False)
    sql += _pg_trigger("payloads", "no_update", "BEFORE UPDATE", "audit_ledger_reject")
    sql += _pg_trigger(
        "payloads", "guard_delete", "BEFORE DELETE", "audit_ledger_guard_payload_delete"
    )
    sql += _pg_trigger("data_keys", "no_delete", "BEFORE DELETE", "audit_ledger_reject")
    sql += _pg_trigger(
        "data_keys", "guard_update", "BEFORE UPDATE", "audit_ledger_guard_data_key_update"
    )
    sql += _pg_trigger("legal_holds", "no_delete", "BEFORE DELETE", "audit_ledger_reject")
    sql += _pg_trigger(
        "legal_holds", "guard_update", "BEFORE UPDATE", "audit_ledger_guard_hold_update"
    )
    sql += _pg_trigger("ledger_head", "no_delete", "BEFORE DELETE", "audit_ledger_reject")
    sql += _pg_trigger(
        "ledger_head", "guard_update", "BEFORE UPDATE", "audit_ledger_guard_head_update"
    )
    return sql


# --- SQLite guards -----------------------------------------------------------------------------
# SQLite has no TRUNCATE: "DELETE FROM t" without WHERE fires row triggers when any exist.
def _sqlite_trigger(table: str, name: str, timing: str, when: str | None = None) -> str:
    message = f"audit-ledger: {name.replace('_', ' ')} on {table} is forbidden"
    condition = f" WHEN {when}" if when else ""
    return (
        f"CREATE TRIGGER {table}_{name} {timing} ON {table}{condition} "
        f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
    )


def _sqlite_guards() -> list[str]:
    sql = []
    for table in APPEND_ONLY:
        sql.append(_sqlite_trigger(table, "update", "BEFORE UPDATE"))
        sql.append(_sqlite_trigger(table, "delete", "BEFORE DELETE"))
    sql.append(_sqlite_trigger("payloads", "update", "BEFORE UPDATE"))
    sql.append(
        _sqlite_trigger(
            "payloads",
            "unrecorded_delete",
            "BEFORE DELETE",
            "NOT EXISTS (SELECT 1 FROM payload_purges WHERE seq = OLD.seq)",
        )
    )
    sql.append(_sqlite_trigger("data_keys", "delete", "BEFORE DELETE"))
    sql.append(
        _sqlite_trigger(
            "data_keys",
            "update",
            "BEFORE UPDATE",
            "NEW.key_id IS NOT OLD.key_id OR NEW.category IS NOT OLD.category"
            " OR NEW.scope_kind IS NOT OLD.scope_kind OR NEW.scope_value IS NOT OLD.scope_value"
            " OR NEW.kek_id IS NOT OLD.kek_id OR NEW.created_at IS NOT OLD.created_at"
            " OR NEW.uses < OLD.uses"
            " OR (NEW.wrapped IS NOT NULL AND NEW.wrapped IS NOT OLD.wrapped)"
            " OR (OLD.destroyed_at IS NOT NULL AND (NEW.destroyed_at IS NOT OLD.destroyed_at"
            " OR NEW.destroyed_by_seq IS NOT OLD.destroyed_by_seq))"
            " OR (NEW.wrapped IS NULL AND (NEW.destroyed_at IS NULL"
            " OR NEW.destroyed_by_seq IS NULL))",
        )
    )
    sql.append(_sqlite_trigger("legal_holds", "delete", "BEFORE DELETE"))
    sql.append(
        _sqlite_trigger(
            "legal_holds",
            "update",
            "BEFORE UPDATE",
            "OLD.released_seq IS NOT NULL OR NEW.hold_id IS NOT OLD.hold_id"
            " OR NEW.scope IS NOT OLD.scope OR NEW.scope_value IS NOT OLD.scope_value"
            " OR NEW.since IS NOT OLD.since OR NEW.until IS NOT OLD.until"
            " OR NEW.created_by IS NOT OLD.created_by OR NEW.created_seq IS NOT OLD.created_seq",
        )
    )
    sql.append(_sqlite_trigger("ledger_head", "delete", "BEFORE DELETE"))
    sql.append(
        _sqlite_trigger(
            "ledger_head",
            "shrink",
            "BEFORE UPDATE",
            "NEW.id IS NOT OLD.id OR NEW.size < OLD.size",
        )
    )
    return sql


def upgrade() -> None:
    op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("last_leaf_hash", sa.LargeBinary, nullable=True),
        sa.Column("last_recorded_at", TS, nullable=True),
        sa.Column("frontier", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "entries",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("writer", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("leaf_hash", sa.LargeBinary, nullable=False),
        sa.Column("leaf", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_entries_category_seq", "entries", ["category", "seq"])
    op.create_index("ix_entries_category_occurred", "entries", ["category", "occurred_at"])
    op.create_index("ix_entries_category_recorded", "entries", ["category", "recorded_at"])
    op.create_index("ix_entries_key_id", "entries", ["key_id"])
    # entry_refs and payloads get a row (or two) per appended event: no foreign keys there.
    # A PostgreSQL foreign-key check locks the referenced entries row (FOR KEY SHARE), which
    # writes its tuple header — for every event. ``verify`` finds rows without an entry instead.
    op.create_table(
        "entry_refs",
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.String(64), nullable=False),
    )
    op.create_index("ix_entry_refs_lookup", "entry_refs", ["name", "value", "seq"])
    op.create_table(
        "tree_nodes",
        sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "payloads",
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("blob", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "payload_purges",
        sa.Column("seq", sa.BigInteger, sa.ForeignKey("entries.seq"), primary_key=True),
        sa.Column("op_seq", sa.BigInteger, sa.ForeignKey("entries.seq"), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
    )
    op.create_table(
        "data_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("scope_kind", sa.String(16), nullable=False),
        sa.Column("scope_value", sa.String(64), nullable=False),
        sa.Column("kek_id", sa.String(64), nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=True),
        sa.Column("uses", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("destroyed_at", TS, nullable=True),
        sa.Column("destroyed_by_seq", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_data_keys_scope", "data_keys", ["category", "scope_kind", "scope_value"])
    op.create_table(
        "checkpoints",
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root_hash", sa.LargeBinary, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )
    op.create_table(
        "principals",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("roles", sa.String(256), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
    )
    op.create_table(
        "legal_holds",
        sa.Column("hold_id", sa.String(40), primary_key=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("scope_value", sa.String(64), nullable=True),
        sa.Column("since", TS, nullable=True),
        sa.Column("until", TS, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_seq", sa.BigInteger, nullable=False),
        sa.Column("released_by", sa.String(128), nullable=True),
        sa.Column("released_seq", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "job_runs",
        sa.Column("job", sa.String(64), primary_key=True),
        sa.Column("last_tick", sa.BigInteger, nullable=False),
        sa.Column("last_run_at", TS, nullable=False),
        sa.Column("last_outcome", sa.String(16), nullable=False),
    )
    op.execute(
        sa.text("INSERT INTO ledger_head (id, size, frontier) VALUES (1, 0, :empty)").bindparams(
            empty=b""
        )
    )
    dialect = op.get_bind().dialect.name
    for statement in _pg_guards() if dialect == "postgresql" else _sqlite_guards():
        op.execute(statement)


def downgrade() -> None:
    raise RuntimeError("the audit ledger's schema cannot be downgraded: it would destroy history")
