"""Upgrading a ledger that already holds entries: revision 0001 → head (0007 at present)
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
from audit_ledger.storage.entries import EntryFilter
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


def _ref_indexes(url: str) -> dict[str, str]:
    """The indexes of ``entry_refs`` other than its primary key: name -> definition."""
    engine = create_engine_for_url(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                rows = conn.execute(
                    text(
                        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'entry_refs'"
                        " AND indexname <> 'entry_refs_pkey'"
                    )
                )
            else:
                rows = conn.execute(
                    text(
                        "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
                        " AND tbl_name = 'entry_refs' AND sql IS NOT NULL"
                    )
                )
            return {str(name): str(definition) for name, definition in rows}
    finally:
        engine.dispose()


def test_0007_looks_refs_up_through_a_hash_index_on_postgresql(
    backend: str, empty_url: str, tmp_path: Path
) -> None:
    """PostgreSQL: a hash index on the blind index value replaces the (name, value, seq)
    B-tree, and a downgrade puts the B-tree back; SQLite (no hash indexes) keeps its B-tree.
    Look-ups by user and order id find the same entries either way."""
    init_keys(tmp_path / "keys", ORIGIN)
    settings = load_settings(
        database_url=empty_url, keys_dir=tmp_path / "keys", checkpoint_origin=ORIGIN
    )
    btree = {"ix_entry_refs_lookup"}
    _upgrade(empty_url, "0006")
    assert set(_ref_indexes(empty_url)) == btree
    _upgrade(empty_url, "head")
    indexes = _ref_indexes(empty_url)
    if backend == "postgresql":
        assert set(indexes) == {"ix_entry_refs_value"}
        assert "USING hash (value)" in indexes["ix_entry_refs_value"]
    else:
        assert set(indexes) == btree
    ledger = Ledger.open(settings)
    try:
        raws = [event("financial_transactions", user_id=u % 3) for u in range(9)]
        receipts = ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
        user = ledger.keys.indexer.index("user", 1)
        found = ledger.store.scan(EntryFilter(refs={"user": user}), None, 100)
        assert [e.seq for e in found] == [r.seq for r in receipts][1::3]
    finally:
        ledger.close()
    engine = create_engine_for_url(empty_url)
    try:
        with engine.begin() as conn:
            config = migrations.alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0006")
    finally:
        engine.dispose()
    assert set(_ref_indexes(empty_url)) == btree


def _index_state(url: str) -> tuple[int, bool, str] | None:
    """OID, validity and definition of ``ix_entry_refs_value`` (None: there is none)."""
    engine = create_engine_for_url(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT i.indexrelid::bigint, i.indisvalid, pg_get_indexdef(i.indexrelid)"
                    " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE c.relname = 'ix_entry_refs_value'"
                )
            ).first()
            return None if row is None else (int(row[0]), bool(row[1]), str(row[2]))
    finally:
        engine.dispose()


def _outside_a_transaction(url: str, statement: str) -> None:
    engine = create_engine_for_url(url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
@pytest.mark.parametrize("beforehand", ["built", "failed", "other"])
def test_0007_keeps_a_hash_index_built_beforehand_concurrently(
    empty_url: str, tmp_path: Path, beforehand: str
) -> None:
    """On a large log the operator builds the hash index without locking out writes (CREATE
    INDEX CONCURRENTLY, docs/scaling.md) before upgrading: the upgrade keeps that index. A
    concurrent build that failed leaves an invalid index of that name, and an index of that
    name may be another one: the upgrade rebuilds either. Look-ups work afterwards."""
    init_keys(tmp_path / "keys", ORIGIN)
    settings = load_settings(
        database_url=empty_url, keys_dir=tmp_path / "keys", checkpoint_origin=ORIGIN
    )
    _upgrade(empty_url, "0006")
    ledger = Ledger.open(settings)
    try:
        raws = [event("financial_transactions", user_id=u % 3) for u in range(9)]
        receipts = ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
    finally:
        ledger.close()
    if beforehand == "built":
        _outside_a_transaction(
            empty_url,
            "CREATE INDEX CONCURRENTLY ix_entry_refs_value ON entry_refs USING hash (value)",
        )
    elif beforehand == "failed":
        # A unique build over a column with repeats fails half-way, as an interrupted one
        # does, and leaves its index behind, marked invalid.
        with pytest.raises(DBAPIError, match="could not create unique index"):
            _outside_a_transaction(
                empty_url,
                "CREATE UNIQUE INDEX CONCURRENTLY ix_entry_refs_value ON entry_refs (name)",
            )
    else:
        _outside_a_transaction(empty_url, "CREATE INDEX ix_entry_refs_value ON entry_refs (value)")
    before = _index_state(empty_url)
    assert before is not None
    assert before[1] == (beforehand != "failed")

    _upgrade(empty_url, "head")
    after = _index_state(empty_url)
    assert after is not None
    assert after[1], after
    assert after[2].endswith("USING hash (value)"), after
    assert (after[0] == before[0]) == (beforehand == "built")
    assert set(_ref_indexes(empty_url)) == {"ix_entry_refs_value"}
    ledger = Ledger.open(settings)
    try:
        ledger.check_schema()
        user = ledger.keys.indexer.index("user", 1)
        found = ledger.store.scan(EntryFilter(refs={"user": user}), None, 100)
        assert [e.seq for e in found] == [r.seq for r in receipts][1::3]
    finally:
        ledger.close()
