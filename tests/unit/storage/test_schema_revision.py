"""The schema revision the code needs, and that starting a process does not import Alembic."""

from __future__ import annotations

import subprocess
import sys

from audit_ledger.storage import migrations


def test_head_revision_is_the_newest_migration_script() -> None:
    assert migrations.head_revision() == migrations.script_head_revision()


def test_the_cli_and_the_app_start_without_alembic() -> None:
    # Alembic is a fifth of the CLI's start-up; only `db upgrade` needs it.
    probe = (
        "import sys, audit_ledger.cli, audit_ledger.api.app, audit_ledger.ledger.service;"
        "sys.exit('alembic' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0
