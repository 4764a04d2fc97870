"""Least-privilege grants for the application's PostgreSQL role (DESIGN §5, migration 0004).

The serving role owns nothing. It may SELECT what it reads and INSERT what it appends; it keeps
UPDATE or DELETE only where an append needs it, each also fenced by a guard trigger:

* ``ledger_head``: UPDATE of its data columns (the head only grows; ``SELECT … FOR UPDATE``
  needs UPDATE privilege in PostgreSQL);
* ``data_keys``: INSERT and UPDATE of ``uses`` (a new data key, its use count);
* ``legal_holds``: INSERT (placing a hold only protects more);
* ``job_runs``: INSERT and UPDATE (scheduler bookkeeping, not ledger data);
* ``erasure_requests``: INSERT and UPDATE (the queue around the erasures the chain records);
* ``console_sessions``: INSERT, UPDATE and DELETE (server-side sessions, not ledger data).

Everything destructive or that grants access — purging payloads, destroying data keys,
adding, rotating, attesting or revoking principals, releasing holds — it may do only by
EXECUTE of the owner role's ``SECURITY DEFINER`` functions, which check the authorising
``ledger_operations`` entry in the chain. It has no INSERT, UPDATE or DELETE on ``principals``,
``payload_purges`` or ``payloads`` rows (beyond appending payloads), nor on the destruction
columns of ``data_keys`` or the release columns of ``legal_holds``. KEK rotation re-wraps data
keys, so ``keys rotate-kek`` runs with the owner's database URL.

``db grants`` also writes the purge rules the functions check from the policy in force
(``audit_ledger_purge_rules``: which categories retention may purge and after how long, which
erasure may shred), so a policy change is applied by the owner, not by the serving role.

A superuser can still rewrite anything — that is what checkpoints cosigned by outside
witnesses are for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from audit_ledger.errors import ConfigError

_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_CATEGORY = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
_INTERVAL = re.compile(r"[0-9]{1,6} (years|days)\Z")

_INSERT_ONLY = (
    "entries",
    "entry_refs",
    "tree_nodes",
    "checkpoints",
    "checkpoint_cosignatures",
    "payloads",
    "legal_holds",
)
_READ_ONLY = (
    "alembic_version",
    "payload_purges",
    "principals",
    "audit_ledger_purge_rules",
)
#: The owner's functions the serving role may call (migration 0004), with their signatures.
FUNCTIONS = (
    "audit_ledger_purge(bigint, text, bigint[], text[], text)",
    "audit_ledger_bind_principal(bigint, text, text, bytea, text)",
    "audit_ledger_revoke_principal(bigint, text, text)",
    "audit_ledger_release_hold(bigint, text, text)",
)

#: (category, PostgreSQL interval or None for "retention never purges", erasable).
PurgeRule = tuple[str, str | None, bool]


def _rule_statements(rules: Iterable[PurgeRule]) -> list[str]:
    values = []
    for category, retention, erasable in sorted(rules):
        # Policy names and periods are validated by the policy loader; checked again here
        # because they are spliced into SQL text that `db grants` prints for review.
        if not _CATEGORY.match(category) or (
            retention is not None and not _INTERVAL.match(retention)
        ):
            raise ConfigError("policy category or retention cannot be written as a purge rule")
        period = "NULL" if retention is None else f"'{retention}'"
        values.append(f"('{category}', {period}, {'true' if erasable else 'false'})")
    out = ["DELETE FROM audit_ledger_purge_rules"]
    if values:
        out.append(
            "INSERT INTO audit_ledger_purge_rules (category, retention, erasable) VALUES "  # noqa: S608 - values checked against strict patterns above
            + ", ".join(values)
        )
    return out


def grant_statements(role: str, rules: Iterable[PurgeRule] = ()) -> list[str]:
    """The statements that give ``role`` (a plain lower-case identifier) the serving role's
    privileges and nothing more, then write the purge ``rules``."""
    if not _ROLE.match(role):
        raise ConfigError("role name must be a lower-case SQL identifier ([a-z_][a-z0-9_]*)")
    return [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
        f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM {role}",
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT ON {', '.join(_INSERT_ONLY)} TO {role}",
        f"GRANT SELECT ON {', '.join(_READ_ONLY)} TO {role}",
        f"GRANT SELECT ON ledger_head TO {role}",
        f"GRANT UPDATE (size, last_leaf_hash, last_recorded_at, frontier) ON ledger_head TO {role}",
        f"GRANT SELECT, INSERT ON data_keys TO {role}",
        f"GRANT UPDATE (uses) ON data_keys TO {role}",
        f"GRANT SELECT, INSERT, UPDATE ON job_runs, erasure_requests TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON console_sessions TO {role}",
        *(f"GRANT EXECUTE ON FUNCTION {f} TO {role}" for f in FUNCTIONS),
        *_rule_statements(rules),
    ]
