"""Shared fixtures: throwaway databases on both backends, keys, settings, a ledger.

PostgreSQL: the suite uses the server at ``AUDIT_LEDGER_TEST_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) to create one migrated template database per
session and a fresh database per test (``CREATE DATABASE … TEMPLATE``), dropped afterwards.
When no server is reachable the PostgreSQL tests are skipped and the run says so loudly at the
end — unless ``AUDIT_LEDGER_REQUIRE_POSTGRES=1`` (CI), which makes them fail instead.

SQLite: one migrated template file per session, copied per test.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from audit_ledger.crypto.keys import init_keys
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings, load_settings
from audit_ledger.storage import migrations
from audit_ledger.storage.engine import create_engine_for_url

PG_ADMIN_URL = os.environ.get(
    "AUDIT_LEDGER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = os.environ.get("AUDIT_LEDGER_REQUIRE_POSTGRES") == "1"
ORIGIN = "test.example/ledger"

_pg_problem: str | None = None


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def pytest_configure(config: pytest.Config) -> None:
    global _pg_problem  # noqa: PLW0603 - one probe per session
    _pg_problem = _pg_reachable()
    if _pg_problem and REQUIRE_PG:
        raise pytest.UsageError(
            f"AUDIT_LEDGER_REQUIRE_POSTGRES=1 but PostgreSQL is unreachable: {_pg_problem}"
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _pg_problem:
        terminalreporter.write_sep("!", "POSTGRESQL TESTS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(
            f"PostgreSQL at {PG_ADMIN_URL.rsplit('@', 1)[-1]} is unreachable ({_pg_problem}).",
            red=True,
        )
        terminalreporter.write_line(
            "Only the SQLite backend was tested. Start PostgreSQL or set AUDIT_LEDGER_TEST_PG_URL.",
            red=True,
        )
    else:
        terminalreporter.write_line("PostgreSQL backend: tested", green=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with ``process`` tests (servers, CLIs and worker processes: the long ones) run
    first, each module's tests in their own order. With several pytest workers (scripts/test)
    the long modules then start early instead of ending the run on one busy worker."""
    heavy = {
        item.path
        for item in items
        if item.get_closest_marker("process") or "live_server" in getattr(item, "fixturenames", ())
    }
    items.sort(key=lambda item: item.path not in heavy)


def pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


def _admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True)


def create_pg_database(template: str | None = None) -> str:
    name = f"al_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        if template:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_pg_database(name: str) -> None:
    with _admin() as conn:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        conn.execute(drop)


def migrate(url: str) -> None:
    engine = create_engine_for_url(url, create=True)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    if _pg_problem:
        pytest.skip(f"PostgreSQL unreachable: {_pg_problem}")
    name = create_pg_database()
    try:
        migrate(pg_url(name))
        yield name
    finally:
        drop_pg_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of the requested backend, dropped afterwards."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "ledger.sqlite3"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    name = create_pg_database(template=request.getfixturevalue("pg_template"))
    try:
        yield pg_url(name)
    finally:
        drop_pg_database(name)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    init_keys(path, ORIGIN)
    return path


@pytest.fixture
def settings(database_url: str, keys_dir: Path) -> Settings:
    return load_settings(database_url=database_url, keys_dir=keys_dir, checkpoint_origin=ORIGIN)


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    led = Ledger.open(settings)
    try:
        yield led
    finally:
        led.close()
