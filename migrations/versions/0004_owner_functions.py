"""Privileged changes go through the owner role's SECURITY DEFINER functions (DESIGN §5).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

The serving role appends and reads; it keeps no INSERT, UPDATE or DELETE on what would let it
mint access or destroy records (``db grants`` revokes them). Each privileged change is instead a
function owned by the migrating (owner) role, ``SECURITY DEFINER`` with a fixed ``search_path``
(so a serving role cannot plant look-alike objects earlier on the path), that first checks the
``ledger_operations`` entry authorising it — appended in the same transaction, so already in the
chain — and the SHA-256 commitment its header ``refs`` carry (``audit_ledger.core.commitments``):

* ``audit_ledger_purge``: a retention run or erasure deleting payloads and destroying data keys.
  The entry commits to exactly those seqs and key ids; each purged entry precedes it; its
  category's rule in ``audit_ledger_purge_rules`` allows it (retention: a finite period that has
  passed at the authorising entry's ``recorded_at``; erasure: an erasable subject-keyed
  category). ``ledger_operations`` and permanent categories (financial records) have no rule
  that lets retention touch them. No active legal hold covers a purged entry, and no destroyed
  key still encrypts a stored payload.
* ``audit_ledger_bind_principal``: adding, rotating or attesting a principal; the entry commits
  to its name, roles and token hash (a rotation also retires the old token's hash).
* ``audit_ledger_revoke_principal``: the entry names the revoked token's hash.
* ``audit_ledger_release_hold``: the entry names the released hold.

Principals gain ``bound_seq`` (the entry their row must match) and ``revoked_seq``. SQLite has
no roles: triggers check what they can (each change names an authorising entry of the right
kind; no un-revoking, no role changes), and ``verify`` detects the rest.
"""

# ruff: noqa: S608 - every SQL text here is built from this file's constants, never from input

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RULES = "audit_ledger_purge_rules"
#: The built-in policy's rules (DESIGN §2); ``db grants --apply`` rewrites them from the policy.
DEFAULT_RULES: tuple[tuple[str, str | None, bool], ...] = (
    ("financial_transactions", None, False),
    ("data_privacy_events", "7 years", True),
    ("security_events", "5 years", False),
)

# Fixed search_path: a caller cannot plant look-alike objects in a schema searched first. UTC:
# retention periods are added to timestamps in the same zone as the policy computes them.
_HEAD = (
    "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public SET TimeZone = 'UTC'"
)

PG_FUNCTIONS = {
    "audit_ledger_commit(text[])": """
    CREATE FUNCTION audit_ledger_commit(p_lines text[]) RETURNS text
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog AS $$
      SELECT encode(sha256(convert_to(array_to_string(p_lines, E'\\n') || E'\\n', 'UTF8')), 'hex')
    $$
    """,
    "audit_ledger_authorising_refs(bigint, text[])": f"""
    CREATE FUNCTION audit_ledger_authorising_refs(p_op_seq bigint, p_event_types text[])
    RETURNS jsonb {_HEAD} AS $$
    DECLARE e record;
    BEGIN
      SELECT category, event_type, leaf INTO e FROM public.entries WHERE seq = p_op_seq;
      IF NOT FOUND OR e.category <> 'ledger_operations'
         OR NOT (e.event_type = ANY (p_event_types)) THEN
        RAISE EXCEPTION 'audit-ledger: entry % is not a ledger_operations % entry',
          p_op_seq, array_to_string(p_event_types, '/') USING ERRCODE = 'P0001';
      END IF;
      RETURN coalesce(convert_from(e.leaf, 'UTF8')::jsonb -> 'refs', '{{}}'::jsonb);
    END $$
    """,
    "audit_ledger_purge(bigint, text, bigint[], text[], text)": f"""
    CREATE FUNCTION audit_ledger_purge(
      p_op_seq bigint, p_reason text, p_seqs bigint[], p_key_ids text[], p_when text
    ) RETURNS void {_HEAD} AS $$
    DECLARE
      refs jsonb;
      op_at timestamptz;
      bad text;
    BEGIN
      IF p_reason IS NULL OR p_reason NOT IN ('retention', 'erasure') THEN
        RAISE EXCEPTION 'audit-ledger: unknown purge reason' USING ERRCODE = 'P0001';
      END IF;
      refs := audit_ledger_authorising_refs(
        p_op_seq, ARRAY[CASE p_reason WHEN 'retention' THEN 'retention_run' ELSE 'erasure' END]);
      IF refs ->> 'purge' IS DISTINCT FROM audit_ledger_commit(ARRAY[
           'audit-ledger/purge/v1', p_reason,
           coalesce((SELECT string_agg(s::text, ',' ORDER BY s)
                     FROM (SELECT DISTINCT unnest(p_seqs) AS s) x), ''),
           coalesce((SELECT string_agg(k, ',' ORDER BY k COLLATE "C")
                     FROM (SELECT DISTINCT unnest(p_key_ids) AS k) y), '')]) THEN
        RAISE EXCEPTION 'audit-ledger: entry % does not authorise these purges', p_op_seq
          USING ERRCODE = 'P0001';
      END IF;
      SELECT recorded_at::timestamptz INTO op_at FROM public.entries WHERE seq = p_op_seq;
      SELECT t.s::text INTO bad
        FROM unnest(p_seqs) AS t(s)
        LEFT JOIN public.entries e ON e.seq = t.s
        LEFT JOIN public.{RULES} r ON r.category = e.category
       WHERE e.seq IS NULL OR e.seq >= p_op_seq OR r.category IS NULL
          OR (p_reason = 'retention' AND (r.retention IS NULL
              OR e.recorded_at::timestamptz + r.retention::interval > op_at))
          OR (p_reason = 'erasure' AND NOT r.erasable)
       LIMIT 1;
      IF FOUND THEN
        RAISE EXCEPTION 'audit-ledger: the policy does not allow % to purge payload %',
          p_reason, bad USING ERRCODE = 'P0001';
      END IF;
      SELECT t.k INTO bad
        FROM unnest(p_key_ids) AS t(k)
        LEFT JOIN public.data_keys d ON d.key_id = t.k
        LEFT JOIN public.{RULES} r ON r.category = d.category
       WHERE d.key_id IS NULL OR r.category IS NULL
          OR (p_reason = 'retention' AND r.retention IS NULL)
          OR (p_reason = 'erasure' AND (NOT r.erasable OR d.scope_kind <> 'subject'))
       LIMIT 1;
      IF FOUND THEN
        RAISE EXCEPTION 'audit-ledger: the policy does not allow % to destroy a data key',
          p_reason USING ERRCODE = 'P0001';
      END IF;
      -- An active legal hold covers no purged entry (the same rules as ledger.holds).
      SELECT t.s::text INTO bad
        FROM unnest(p_seqs) AS t(s)
        JOIN public.entries e ON e.seq = t.s
        JOIN public.legal_holds h ON h.released_seq IS NULL AND (
             (h.scope = 'category' AND h.scope_value = e.category)
          OR (h.scope = 'time_range' AND (h.since IS NULL OR e.occurred_at >= h.since)
              AND (h.until IS NULL OR e.occurred_at < h.until))
          OR (h.scope IN ('subject', 'order') AND EXISTS (
                SELECT 1 FROM public.entry_refs r
                 WHERE r.seq = e.seq AND r.value = h.scope_value
                   AND r.name = CASE h.scope WHEN 'subject' THEN 'user' ELSE 'order' END)))
       LIMIT 1;
      IF FOUND THEN
        RAISE EXCEPTION 'audit-ledger: payload % is under an active legal hold', bad
          USING ERRCODE = 'P0001';
      END IF;
      INSERT INTO public.payload_purges (seq, op_seq, reason)
        SELECT DISTINCT s, p_op_seq, p_reason FROM unnest(p_seqs) AS s;
      DELETE FROM public.payloads WHERE seq = ANY (p_seqs);
      -- A key is destroyed only with every payload it still encrypts (so never one that a
      -- held or unexpired payload needs).
      SELECT e.key_id INTO bad
        FROM public.payloads p JOIN public.entries e ON e.seq = p.seq
       WHERE e.key_id = ANY (p_key_ids)
       LIMIT 1;
      IF FOUND THEN
        RAISE EXCEPTION 'audit-ledger: a destroyed data key still encrypts a stored payload'
          USING ERRCODE = 'P0001';
      END IF;
      UPDATE public.data_keys SET wrapped = NULL, destroyed_at = p_when, destroyed_by_seq = p_op_seq
       WHERE key_id = ANY (p_key_ids) AND wrapped IS NOT NULL;
    END $$
    """,
    "audit_ledger_bind_principal(bigint, text, text, bytea, text)": f"""
    CREATE FUNCTION audit_ledger_bind_principal(
      p_op_seq bigint, p_name text, p_roles text, p_token_hash bytea, p_when text
    ) RETURNS void {_HEAD} AS $$
    DECLARE
      refs jsonb;
      kind text;
      old record;
    BEGIN
      refs := audit_ledger_authorising_refs(
        p_op_seq, ARRAY['principal_added', 'principal_rotated', 'principal_attested']);
      IF refs ->> 'principal' IS DISTINCT FROM audit_ledger_commit(ARRAY[
           'audit-ledger/principal/v1', p_name, p_roles, encode(p_token_hash, 'hex')]) THEN
        RAISE EXCEPTION 'audit-ledger: entry % does not authorise this principal', p_op_seq
          USING ERRCODE = 'P0001';
      END IF;
      SELECT event_type INTO kind FROM public.entries WHERE seq = p_op_seq;
      IF kind = 'principal_added' THEN
        INSERT INTO public.principals (name, token_hash, roles, created_at, bound_seq)
        VALUES (p_name, p_token_hash, p_roles, p_when, p_op_seq);
        RETURN;
      END IF;
      SELECT * INTO old FROM public.principals WHERE name = p_name FOR UPDATE;
      IF NOT FOUND OR old.revoked_at IS NOT NULL OR old.roles <> p_roles
         OR coalesce(old.bound_seq, -1) >= p_op_seq
         OR (kind = 'principal_attested'
             AND (old.bound_seq IS NOT NULL OR old.token_hash <> p_token_hash))
         OR (kind = 'principal_rotated' AND refs ->> 'principal_retired' IS DISTINCT FROM
             audit_ledger_commit(ARRAY['audit-ledger/principal-retired/v1',
                                       encode(old.token_hash, 'hex')])) THEN
        RAISE EXCEPTION 'audit-ledger: entry % does not authorise this principal change',
          p_op_seq USING ERRCODE = 'P0001';
      END IF;
      UPDATE public.principals SET token_hash = p_token_hash, bound_seq = p_op_seq
       WHERE name = p_name;
    END $$
    """,
    "audit_ledger_revoke_principal(bigint, text, text)": f"""
    CREATE FUNCTION audit_ledger_revoke_principal(p_op_seq bigint, p_name text, p_when text)
    RETURNS boolean {_HEAD} AS $$
    DECLARE
      refs jsonb;
      hash bytea;
    BEGIN
      refs := audit_ledger_authorising_refs(p_op_seq, ARRAY['principal_revoked']);
      SELECT token_hash INTO hash FROM public.principals
       WHERE name = p_name AND revoked_at IS NULL FOR UPDATE;
      IF NOT FOUND THEN
        RETURN false;
      END IF;
      IF refs ->> 'principal_retired' IS DISTINCT FROM audit_ledger_commit(ARRAY[
           'audit-ledger/principal-retired/v1', encode(hash, 'hex')]) THEN
        RAISE EXCEPTION 'audit-ledger: entry % does not authorise this revocation', p_op_seq
          USING ERRCODE = 'P0001';
      END IF;
      UPDATE public.principals SET revoked_at = p_when, revoked_seq = p_op_seq WHERE name = p_name;
      RETURN true;
    END $$
    """,
    "audit_ledger_release_hold(bigint, text, text)": f"""
    CREATE FUNCTION audit_ledger_release_hold(p_op_seq bigint, p_hold_id text, p_by text)
    RETURNS boolean {_HEAD} AS $$
    DECLARE refs jsonb;
    BEGIN
      refs := audit_ledger_authorising_refs(p_op_seq, ARRAY['legal_hold_released']);
      IF refs ->> 'hold_release' IS DISTINCT FROM audit_ledger_commit(ARRAY[
           'audit-ledger/hold-release/v1', p_hold_id]) THEN
        RAISE EXCEPTION 'audit-ledger: entry % does not authorise this release', p_op_seq
          USING ERRCODE = 'P0001';
      END IF;
      UPDATE public.legal_holds SET released_by = p_by, released_seq = p_op_seq
       WHERE hold_id = p_hold_id AND released_seq IS NULL AND created_seq < p_op_seq;
      RETURN FOUND;
    END $$
    """,
}

PG_TRIGGERS = [
    # Nobody but these functions' owner removes a principal, whatever its grants say.
    (
        "CREATE TRIGGER principals_no_delete BEFORE DELETE ON principals FOR EACH ROW "
        "EXECUTE FUNCTION audit_ledger_reject()"
    ),
    "ALTER TABLE principals ENABLE ALWAYS TRIGGER principals_no_delete",
]


def _authorised_by(seq: str, event_types: str, extra: str = "") -> str:
    """SQLite: ``seq`` names a ledger_operations entry of one of ``event_types``."""
    return (
        f"EXISTS (SELECT 1 FROM entries e WHERE e.seq = {seq}"
        f" AND e.category = 'ledger_operations' AND e.event_type IN ({event_types}){extra})"
    )


def _sqlite_trigger(table: str, name: str, timing: str, when: str) -> str:
    message = f"audit-ledger: {name.replace('_', ' ')} on {table} is forbidden"
    return (
        f"CREATE TRIGGER {table}_{name} {timing} ON {table} WHEN {when} "
        f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
    )


_BINDING = "'principal_added', 'principal_rotated', 'principal_attested'"
_PURGING = "'retention_run', 'erasure'"

SQLITE_TRIGGERS = [
    _sqlite_trigger(
        "payload_purges",
        "unauthorised_insert",
        "BEFORE INSERT",
        "NOT "
        + _authorised_by(
            "NEW.op_seq",
            _PURGING,
            " AND e.event_type = CASE NEW.reason WHEN 'retention' THEN 'retention_run'"
            " WHEN 'erasure' THEN 'erasure' END AND NEW.seq < NEW.op_seq",
        )
        + f" OR EXISTS (SELECT 1 FROM entries t LEFT JOIN {RULES} r ON r.category = t.category"
        " WHERE t.seq = NEW.seq AND (r.category IS NULL"
        " OR (NEW.reason = 'retention' AND r.retention IS NULL)"
        " OR (NEW.reason = 'erasure' AND NOT r.erasable)))",
    ),
    _sqlite_trigger(
        "principals",
        "unauthorised_insert",
        "BEFORE INSERT",
        "NEW.bound_seq IS NULL OR NEW.revoked_at IS NOT NULL OR NOT "
        + _authorised_by("NEW.bound_seq", "'principal_added'"),
    ),
    _sqlite_trigger(
        "principals",
        "unauthorised_update",
        "BEFORE UPDATE",
        "OLD.revoked_at IS NOT NULL OR NEW.name IS NOT OLD.name OR NEW.roles IS NOT OLD.roles"
        " OR NEW.created_at IS NOT OLD.created_at"
        " OR (NEW.token_hash IS NOT OLD.token_hash AND NOT "
        + _authorised_by("NEW.bound_seq", "'principal_rotated'")
        + ") OR (NEW.bound_seq IS NOT OLD.bound_seq AND (NEW.bound_seq IS NULL"
        " OR NEW.bound_seq <= coalesce(OLD.bound_seq, -1) OR NOT "
        + _authorised_by("NEW.bound_seq", _BINDING)
        + ")) OR (NEW.revoked_at IS NOT NULL AND (NEW.revoked_seq IS NULL OR NOT "
        + _authorised_by("NEW.revoked_seq", "'principal_revoked'")
        + "))",
    ),
    _sqlite_trigger("principals", "delete", "BEFORE DELETE", "1"),
    _sqlite_trigger(
        "data_keys",
        "unauthorised_destruction",
        "BEFORE UPDATE",
        "NEW.wrapped IS NULL AND OLD.wrapped IS NOT NULL AND (NEW.destroyed_by_seq IS NULL"
        " OR NOT " + _authorised_by("NEW.destroyed_by_seq", _PURGING) + ")",
    ),
    _sqlite_trigger(
        "legal_holds",
        "unauthorised_release",
        "BEFORE UPDATE",
        "NEW.released_seq IS NOT NULL AND NOT "
        + _authorised_by("NEW.released_seq", "'legal_hold_released'"),
    ),
]


def upgrade() -> None:
    op.add_column("principals", sa.Column("bound_seq", sa.BigInteger, nullable=True))
    op.add_column("principals", sa.Column("revoked_seq", sa.BigInteger, nullable=True))
    op.create_table(
        RULES,
        sa.Column("category", sa.String(64), primary_key=True),
        # A PostgreSQL interval literal ("7 years", "30 days"); NULL: retention never purges.
        sa.Column("retention", sa.String(32), nullable=True),
        sa.Column("erasable", sa.Boolean, nullable=False),
    )
    op.bulk_insert(
        sa.table(
            RULES,
            sa.column("category", sa.String),
            sa.column("retention", sa.String),
            sa.column("erasable", sa.Boolean),
        ),
        [{"category": c, "retention": r, "erasable": e} for c, r, e in DEFAULT_RULES],
    )
    if op.get_bind().dialect.name == "postgresql":
        for signature, body in PG_FUNCTIONS.items():
            op.execute(body.strip())
            # PostgreSQL grants EXECUTE to PUBLIC by default; only ``db grants`` hands it out.
            op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        for statement in PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    raise RuntimeError("the audit ledger's schema cannot be downgraded: it would destroy history")
