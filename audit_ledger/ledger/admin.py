"""Administration that runs before (or beside) the service: keys, schema, database grants.

These use cases need no open ledger: ``keys init`` writes the key files, ``db upgrade`` applies
the migrations, ``db grants`` prints or applies least-privilege grants, and
:func:`check_schema` tells a starting service whether the database is at this version's
revision. The CLI and the server's start-up call them; neither touches storage or key files
itself.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, inspect, text

from audit_ledger.core.checkpoint import Verifier
from audit_ledger.crypto.keys import init_keys, keys_exist
from audit_ledger.errors import ConfigError
from audit_ledger.policy import load_policy
from audit_ledger.storage import migrations
from audit_ledger.storage.database import translate_errors
from audit_ledger.storage.engine import create_engine_for_url
from audit_ledger.storage.grants import grant_statements as _grant_statements

__all__ = [
    "apply_grants",
    "check_schema_on",
    "create_keys",
    "grant_statements",
    "have_keys",
    "upgrade_database",
]


def create_keys(keys_dir: Path, origin: str) -> Verifier:
    """Create ``kek.key``, ``index.key`` and ``checkpoint.key``; the checkpoint verifier."""
    return init_keys(keys_dir, origin)


def have_keys(keys_dir: Path) -> bool:
    """True when any of the key files is present."""
    return keys_exist(keys_dir)


def upgrade_database(database_url: str) -> str | None:
    """Apply every migration; the revision the database is at now (creates a SQLite file)."""
    engine = create_engine_for_url(database_url, create=True)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    return migrations.head_revision()


def grant_statements(role: str, policy_file: Path | None = None) -> list[str]:
    """The grants for the serving ``role`` and the purge rules of the policy in force (the
    built-in one merged with ``policy_file``)."""
    # Here, not at the top: every command that opens a ledger imports this module (for
    # check_schema_on), and only this one needs retention's machinery.
    from audit_ledger.ledger.retention import purge_rules  # noqa: PLC0415

    return _grant_statements(role, purge_rules(load_policy(policy_file)))


def apply_grants(database_url: str, role: str, policy_file: Path | None = None) -> int:
    """Apply :func:`grant_statements` for ``role`` (PostgreSQL); how many were applied."""
    statements = grant_statements(role, policy_file)
    engine = create_engine_for_url(database_url)
    try:
        if engine.dialect.name != "postgresql":
            raise ConfigError("grants apply to PostgreSQL only (SQLite has no roles)")
        with translate_errors(), engine.begin() as conn:
            # GRANT to a missing role fails with a bare UndefinedObject; say which and how.
            found = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
            if found.first() is None:
                raise ConfigError(
                    f"role {role} does not exist in this PostgreSQL server: create it first "
                    f"(CREATE ROLE {role} LOGIN PASSWORD '...'), then rerun 'audit-ledger db "
                    "grants --apply'"
                )
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()
    return len(statements)


def check_schema_on(conn: Connection) -> None:
    """Raise :class:`ConfigError` unless the database is migrated to the current revision."""
    if not inspect(conn).has_table("ledger_head"):
        raise ConfigError("database is not migrated: run 'audit-ledger db upgrade'")
    current = migrations.current_revision(conn)
    if current != migrations.head_revision():
        raise ConfigError(
            f"database schema is at {current}, this version needs "
            f"{migrations.head_revision()}: run 'audit-ledger db upgrade'"
        )
