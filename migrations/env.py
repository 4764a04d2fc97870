"""Alembic environment: runs migrations on a connection handed in by the CLI, or on the URL from
``AUDIT_LEDGER_DATABASE_URL`` when invoked as plain ``alembic``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from audit_ledger.settings import load_settings
from audit_ledger.storage.engine import create_engine_for_url
from audit_ledger.storage.schema import metadata

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine_for_url(load_settings().database_url, create=True)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: triggers differ per backend")
run_migrations_online()
