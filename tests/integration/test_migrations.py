"""Upgrading a ledger that already holds entries: revision 0001 → head (0006 at present)
keeps every entry verifying, and only then may data keys be re-wrapped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from audit_ledger.crypto.keys import init_keys
from audit_ledger.errors import ConfigError
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings, load_settings
from audit_ledger.storage import migrations
from audit_ledger.storage.engine import create_engine_for_url
from tests.conftest import ORIGIN, create_pg_database, drop_pg_database, pg_url
from tests.support.factories import event


@pytest.fixture
def empty_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.sqlite3'}"
        return
    name = create_pg_database()
    try:
        yield pg_url(name)
    finally:
        drop_pg_database(name)


def _upgrade(url: str, revision: str) -> None:
    engine = create_engine_for_url(url, create=True)
    config = migrations.alembic_config()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def test_upgrade_from_0001_keeps_the_log_and_allows_rotation(
    empty_url: str, tmp_path: Path
) -> None:
    init_keys(tmp_path / "keys", ORIGIN)
    settings: Settings = load_settings(
        database_url=empty_url, keys_dir=tmp_path / "keys", checkpoint_origin=ORIGIN
    )
    _upgrade(empty_url, "0001")
    ledger = Ledger.open(settings)
    try:
        raws = [event("financial_transactions") for _ in range(3)]
        raws += [event("data_privacy_events", user_id=u) for u in range(3)]
        ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
        assert ledger.log.checkpoint() is not None
        with pytest.raises(ConfigError, match=f"this version needs {migrations.HEAD_REVISION}"):
            ledger.check_schema()
        # Revision 0001's guard refuses a re-wrap, which is why rotation needs the upgrade.
        engine = create_engine_for_url(empty_url)
        try:
            key_id = next(k.key_id for k in ledger.store.iter_keys() if k.scope_kind == "period")
            with pytest.raises(DBAPIError, match="audit-ledger"), engine.begin() as conn:
                conn.execute(
                    text("UPDATE data_keys SET wrapped = :b, kek_id = 'kek-0123456789abcdef'"
                         " WHERE key_id = :k"),
                    {"b": b"\x01" * 60, "k": key_id},
                )  # fmt: skip
        finally:
            engine.dispose()

        _upgrade(empty_url, "head")
        ledger.check_schema()
        report = ledger.verification.run()
        assert report.ok, report.problem
        keys_before = len(list(ledger.store.iter_keys()))
        _, rewrap = ledger.key_rotation.rotate_kek()
        assert rewrap.rewrapped == keys_before
        report = ledger.verification.run()
        assert report.ok, report.problem
    finally:
        ledger.close()
