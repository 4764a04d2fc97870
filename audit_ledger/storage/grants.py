"""Least-privilege grants for the application's PostgreSQL role (DESIGN §5).

The role owns nothing. It may SELECT and INSERT everywhere it needs to, and UPDATE or DELETE only
where the design requires it — each of those also fenced by a guard trigger:

* ``ledger_head``: UPDATE of its data columns (the head only grows; ``SELECT … FOR UPDATE``
  needs UPDATE privilege in PostgreSQL);
* ``data_keys``: UPDATE of ``uses`` and of the destruction columns (a destroyed key stays so);
* ``payloads``: DELETE (only of payloads whose purge is recorded);
* ``legal_holds``: UPDATE of the release columns (a released hold stays so);
* ``principals``: UPDATE of ``revoked_at``;
* ``job_runs``: INSERT and UPDATE (scheduler bookkeeping, not ledger data).

A superuser can still rewrite anything — that is what signed checkpoints kept outside the
database are for.
"""

from __future__ import annotations

import re

from audit_ledger.errors import ConfigError

_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")

_INSERT_ONLY = (
    "entries",
    "entry_refs",
    "tree_nodes",
    "checkpoints",
    "payload_purges",
    "checkpoint_cosignatures",
)


def grant_statements(role: str) -> list[str]:
    """The GRANT statements for ``role`` (a plain lower-case identifier)."""
    if not _ROLE.match(role):
        raise ConfigError("role name must be a lower-case SQL identifier ([a-z_][a-z0-9_]*)")
    return [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT ON {', '.join(_INSERT_ONLY)} TO {role}",
        f"GRANT SELECT ON alembic_version TO {role}",
        f"GRANT SELECT ON ledger_head TO {role}",
        f"GRANT UPDATE (size, last_leaf_hash, last_recorded_at, frontier) ON ledger_head TO {role}",
        f"GRANT SELECT, INSERT, DELETE ON payloads TO {role}",
        f"GRANT SELECT, INSERT ON data_keys TO {role}",
        f"GRANT UPDATE (uses, wrapped, destroyed_at, destroyed_by_seq) ON data_keys TO {role}",
        f"GRANT SELECT, INSERT ON legal_holds TO {role}",
        f"GRANT UPDATE (released_by, released_seq) ON legal_holds TO {role}",
        f"GRANT SELECT, INSERT ON principals TO {role}",
        f"GRANT UPDATE (revoked_at) ON principals TO {role}",
        f"GRANT SELECT, INSERT, UPDATE ON job_runs TO {role}",
    ]
