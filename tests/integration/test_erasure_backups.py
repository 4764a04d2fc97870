"""Erasure reaches database backups: subject keys never enter the database.

A backup taken before the erasure still holds the subject's ciphertext and the key's row, but
the key material lived only in the key store (``keys/subject-keys/``), and erasure deleted it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from audit_ledger.crypto.keys import EXTERNAL_KEY, EXTERNAL_KEYS_DIR
from audit_ledger.ledger.reads import Query
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings, load_settings
from tests.conftest import ORIGIN, create_pg_database, drop_pg_database, pg_url
from tests.support.factories import event

ERASED_USER = "erase-me-7f3c9"
KEPT_USER = "keep-me-51ab2"


def _backup(settings: Settings, backend: str, tmp_path: Path) -> tuple[str, str | None]:
    """A copy of the database as it is now: (url, PostgreSQL database name to drop)."""
    if backend == "sqlite":
        source = Path(settings.database_url.removeprefix("sqlite:///"))
        copy = tmp_path / "backup.sqlite3"
        shutil.copyfile(source, copy)
        for suffix in ("-wal", "-shm"):
            if Path(f"{source}{suffix}").exists():
                shutil.copyfile(f"{source}{suffix}", f"{copy}{suffix}")
        return f"sqlite:///{copy}", None
    name = create_pg_database(template=settings.database_url.rsplit("/", 1)[-1])
    return pg_url(name), name


def _privacy(ledger: Ledger, user: str) -> tuple[str, object]:
    page = ledger.reads.page_for(
        ["privacy_officer"], Query(category="data_privacy_events", user_id=user)
    )
    (view,) = page.events
    return view.payload_state, view.data


def test_a_backup_taken_before_an_erasure_cannot_read_the_erased_subject(
    settings: Settings, backend: str, tmp_path: Path
) -> None:
    ledger = Ledger.open(settings)
    try:
        raws = [
            event("data_privacy_events", user_id=ERASED_USER),
            event("data_privacy_events", user_id=KEPT_USER),
            event("financial_transactions", user_id=ERASED_USER),
        ]
        ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
        stored = list(ledger.store.iter_keys())
        subject_keys = [k for k in stored if k.scope_kind == "subject"]
        assert len(subject_keys) == 2
        # Subject key material is in the key store only; the row holds a marker.
        assert all(k.wrapped == EXTERNAL_KEY for k in subject_keys)
        key_files = Path(settings.keys_dir) / EXTERNAL_KEYS_DIR
        assert len(list(key_files.glob("*.key"))) == 2
    finally:
        ledger.close()

    backup_url, backup_db = _backup(settings, backend, tmp_path)
    try:
        ledger = Ledger.open(settings)
        try:
            report = ledger.erasure.erase_subject(ERASED_USER)
            assert report.categories["data_privacy_events"]["payloads_purged"] == 1
            assert len(list(key_files.glob("*.key"))) == 1
            assert _privacy(ledger, ERASED_USER)[0] == "erased"
        finally:
            ledger.close()

        restored = Ledger.open(
            load_settings(
                database_url=backup_url, keys_dir=settings.keys_dir, checkpoint_origin=ORIGIN
            )
        )
        try:
            # The backup still has the ciphertext and a live-looking key row ...
            state, data = _privacy(restored, ERASED_USER)
            # ... but no key material: the erased subject stays unreadable.
            assert state == "erased"
            assert data is None
            assert _privacy(restored, KEPT_USER) == (
                "present",
                raws[1]["data"],
            )
            financial = restored.reads.page_for(
                ["compliance_officer"], Query(category="financial_transactions")
            ).events
            assert financial[0].data == raws[2]["data"]  # kept by law, readable
            # verify of the stale backup names the key whose material is gone.
            problem = restored.verification.run().problem
            assert problem is not None
            assert problem.key_id is not None
        finally:
            restored.close()
    finally:
        if backup_db is not None:
            drop_pg_database(backup_db)


def test_retention_removes_key_files_no_committed_row_uses(settings: Settings) -> None:
    from audit_ledger.crypto.envelope import DataKey
    from audit_ledger.crypto.keys import new_key_id

    ledger = Ledger.open(settings)
    try:
        ledger.appends.append(ledger.appends.prepare_batch([event("data_privacy_events")]), "bot")
        # As a rolled-back append leaves it: material stored, row never committed.
        orphan = DataKey.generate(new_key_id())
        ledger.keys.provider.store_external(orphan)
        files = Path(settings.keys_dir) / EXTERNAL_KEYS_DIR
        assert (files / f"{orphan.key_id}.key").exists()
        ledger.retention.run()
        assert not (files / f"{orphan.key_id}.key").exists()
        assert len(list(files.glob("*.key"))) == 1  # the live subject key stays
        assert ledger.verification.run().ok
    finally:
        ledger.close()
