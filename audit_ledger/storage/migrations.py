"""Run and inspect Alembic migrations from inside the application (``audit-ledger db upgrade``).

The migration scripts live in the top-level ``migrations/`` directory of the source tree. An
installed package finds them beside the package (editable installs, the Docker image, which
copies them to ``/app/migrations``) or through ``AUDIT_LEDGER_MIGRATIONS_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from audit_ledger.errors import ConfigError
from audit_ledger.storage.database import translate_errors


def migrations_dir() -> Path:
    candidates = []
    if env := os.environ.get("AUDIT_LEDGER_MIGRATIONS_DIR"):
        candidates.append(Path(env))
    candidates.append(Path(__file__).resolve().parents[2] / "migrations")
    candidates.append(Path.cwd() / "migrations")
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigError("cannot find the migrations directory (set AUDIT_LEDGER_MIGRATIONS_DIR)")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Apply all migrations up to head on ``engine``'s database."""
    config = alembic_config()
    with translate_errors(), engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
