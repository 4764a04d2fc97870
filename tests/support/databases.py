"""Databases wider than one test: a migrated copy of the session template with its own keys,
for module-scoped fixtures whose tests only read (or share a server)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from audit_ledger.crypto.keys import init_keys
from audit_ledger.settings import Settings, load_settings
from tests.conftest import ORIGIN, create_pg_database, drop_pg_database, pg_url

#: Parameters of a module-scoped fixture that runs once per backend.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def fresh_settings(
    backend: str, request: pytest.FixtureRequest, tmp: Path
) -> Iterator[tuple[Settings, Path]]:
    """A migrated database of ``backend`` (copied from the session template) and new keys, for
    fixtures wider than one test; dropped afterwards."""
    pg_name: str | None = None
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp / "ledger.sqlite3"
        shutil.copyfile(template, path)
        url = f"sqlite:///{path}"
    else:
        pg_name = create_pg_database(template=request.getfixturevalue("pg_template"))
        url = pg_url(pg_name)
    try:
        keys = tmp / "keys"
        init_keys(keys, ORIGIN)
        yield load_settings(database_url=url, keys_dir=keys, checkpoint_origin=ORIGIN), tmp
    finally:
        if pg_name is not None:
            drop_pg_database(pg_name)
