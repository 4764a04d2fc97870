"""Data keys may be re-wrapped by a new key-encryption key (KEK rotation).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

Revision 0001's guard let a data-key row only count uses or be destroyed. A KEK rotation must
also replace its wrapping: the wrapped bytes and the KEK id may change together while the key
is live. Everything else stays guarded — its identity, its scope, its creation time; uses only
grow; a destroyed key stays destroyed exactly as recorded, and destroying one still needs the
time and the recording entry. The KEK id alone may change only for a subject key, whose row
holds a marker while its material, in the key store, is re-wrapped in place. A wrapping
replaced by garbage is caught by ``audit-ledger verify``, which unwraps every live key.
"""

from __future__ import annotations

from alembic import op

#: ``audit_ledger.crypto.keys.EXTERNAL_KEY``, frozen here like the rest of this revision: the
#: marker a subject key's row holds, whose material (in the key store) is re-wrapped in place.
EXTERNAL_KEY = b"external-key-store:v1"

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PG_GUARD = """
CREATE OR REPLACE FUNCTION audit_ledger_guard_data_key_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.key_id <> OLD.key_id OR NEW.category <> OLD.category
     OR NEW.scope_kind <> OLD.scope_kind OR NEW.scope_value <> OLD.scope_value
     OR NEW.created_at <> OLD.created_at
     OR NEW.uses < OLD.uses
     OR (OLD.wrapped IS NULL AND (NEW.wrapped IS NOT NULL OR NEW.kek_id <> OLD.kek_id
         OR NEW.destroyed_at IS DISTINCT FROM OLD.destroyed_at
         OR NEW.destroyed_by_seq IS DISTINCT FROM OLD.destroyed_by_seq))
     OR (NEW.wrapped IS NULL AND (NEW.destroyed_at IS NULL OR NEW.destroyed_by_seq IS NULL
         OR NEW.kek_id <> OLD.kek_id))
     OR (NEW.wrapped IS NOT NULL AND (NEW.destroyed_at IS NOT NULL
         OR NEW.destroyed_by_seq IS NOT NULL
         OR (NEW.wrapped <> OLD.wrapped AND NEW.kek_id = OLD.kek_id)
         OR (NEW.wrapped = OLD.wrapped AND NEW.kek_id <> OLD.kek_id
             AND NEW.wrapped <> 'external-key-store:v1'::bytea)))
  THEN
    RAISE EXCEPTION
      'audit-ledger: data key % may only count uses, be re-wrapped by another KEK or be destroyed',
      OLD.key_id USING ERRCODE = 'P0001';
  END IF;
  RETURN NEW;
END $$
"""

SQLITE_CONDITION = (
    "NEW.key_id IS NOT OLD.key_id OR NEW.category IS NOT OLD.category"
    " OR NEW.scope_kind IS NOT OLD.scope_kind OR NEW.scope_value IS NOT OLD.scope_value"
    " OR NEW.created_at IS NOT OLD.created_at"
    " OR NEW.uses < OLD.uses"
    " OR (OLD.wrapped IS NULL AND (NEW.wrapped IS NOT NULL OR NEW.kek_id IS NOT OLD.kek_id"
    " OR NEW.destroyed_at IS NOT OLD.destroyed_at"
    " OR NEW.destroyed_by_seq IS NOT OLD.destroyed_by_seq))"
    " OR (NEW.wrapped IS NULL AND (NEW.destroyed_at IS NULL OR NEW.destroyed_by_seq IS NULL"
    " OR NEW.kek_id IS NOT OLD.kek_id))"
    " OR (NEW.wrapped IS NOT NULL AND (NEW.destroyed_at IS NOT NULL"
    " OR NEW.destroyed_by_seq IS NOT NULL"
    " OR (NEW.wrapped IS NOT OLD.wrapped AND NEW.kek_id IS OLD.kek_id)"
    " OR (NEW.wrapped IS OLD.wrapped AND NEW.kek_id IS NOT OLD.kek_id"
    f" AND NEW.wrapped IS NOT X'{EXTERNAL_KEY.hex()}')))"
)
SQLITE_MESSAGE = "audit-ledger: update on data_keys is forbidden"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_GUARD.strip())
        return
    # SQLite triggers cannot be altered: replace it (same name, the new condition).
    op.execute("DROP TRIGGER data_keys_update")
    op.execute(
        f"CREATE TRIGGER data_keys_update BEFORE UPDATE ON data_keys WHEN {SQLITE_CONDITION} "
        f"BEGIN SELECT RAISE(ABORT, '{SQLITE_MESSAGE}'); END"
    )


def downgrade() -> None:
    raise RuntimeError("the audit ledger's schema cannot be downgraded: it would destroy history")
