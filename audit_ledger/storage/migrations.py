"""Run and inspect Alembic migrations from inside the application (``audit-ledger db upgrade``).

The migration scripts live in the top-level ``migrations/`` directory of the source tree. An
installed package finds them beside the package (editable installs, the Docker image, which
copies them to ``/app/migrations``) or through ``AUDIT_LEDGER_MIGRATIONS_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from audit_ledger.errors import ConfigError
from audit_ledger.storage.database import translate_errors

if TYPE_CHECKING:
    from alembic.config import Config

#: The revision this version of the code needs (the newest script in ``migrations/versions``).
#: Kept as a constant so that a starting process (every CLI command, every server worker)
#: checks the schema without importing Alembic, a fifth of the CLI's start-up; a test checks
#: it against the scripts.
HEAD_REVISION = "0007"


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
    from alembic.config import Config  # noqa: PLC0415 - only when migrating (see HEAD_REVISION)

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def head_revision() -> str:
    """The revision this code needs (:data:`HEAD_REVISION`)."""
    return HEAD_REVISION


def script_head_revision() -> str | None:
    """The newest revision among the migration scripts (what :data:`HEAD_REVISION` must be)."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - see HEAD_REVISION

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at (None before the first migration)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    return str(rows[0][0]) if len(rows) == 1 else None


def upgrade(engine: Engine) -> None:
    """Apply all migrations up to head on ``engine``'s database."""
    from alembic import command  # noqa: PLC0415 - see HEAD_REVISION

    config = alembic_config()
    with translate_errors(), engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
