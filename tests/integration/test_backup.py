"""``audit-ledger db backup`` and the restore drill of the README, end to end on SQLite: a
backup taken while appends run is a consistent prefix of the log, and a restored copy passes
``verify``. PostgreSQL is refused with a pointer to its own tools."""

from __future__ import annotations

import shutil
import stat
import threading
from pathlib import Path

import pytest

from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.support.cli import cli, env_for, run_cli
from tests.support.factories import event

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def leaves(settings: Settings) -> list[bytes]:
    ledger = Ledger.open(settings)
    try:
        size = ledger.log.size()
        out: list[bytes] = []
        while len(out) < size:
            out.extend(leaf for _, leaf in ledger.log.leaves(len(out), size))
        return out
    finally:
        ledger.close()


@pytest.mark.process
@SQLITE_ONLY
def test_backup_during_appends_then_restore_and_verify(
    settings: Settings, ledger: Ledger, tmp_path: Path
) -> None:
    ledger.appends.append(ledger.appends.prepare_batch([event() for _ in range(50)]), "bot")
    assert ledger.log.checkpoint() is not None
    stop = threading.Event()
    batches = [0]

    def appender() -> None:
        while not stop.is_set():
            raws = [event(), event("data_privacy_events", user_id=7), event("security_events")]
            ledger.appends.append(ledger.appends.prepare_batch(raws * 5), "bot")
            batches[0] += 1

    thread = threading.Thread(target=appender, daemon=True)
    thread.start()
    try:
        while batches[0] < 5:
            stop.wait(0.01)
        during = batches[0]
        dest = tmp_path / "backups" / "ledger-backup.sqlite3"
        dest.parent.mkdir()
        result = cli(
            "db", "backup", str(dest), env=env_for(settings.database_url, settings.keys_dir)
        )
        assert result.returncode == 0, result.stderr
        while batches[0] < during + 5:  # appends went on during and after the backup
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(30)
    assert "backed up" in result.stderr
    assert "separately" in result.stderr
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no -wal, no partial

    # The drill: put the backup in place of a lost database (same keys), then verify.
    restored = tmp_path / "restored" / "ledger.sqlite3"
    restored.parent.mkdir()
    shutil.copyfile(dest, restored)
    restored_settings = settings.model_copy(update={"database_url": f"sqlite:///{restored}"})
    verify = cli("verify", env=env_for(restored_settings.database_url, settings.keys_dir))
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith("ok: ")

    # A consistent snapshot: exactly the first N entries of the live log, taken mid-appends.
    copy, live = leaves(restored_settings), leaves(settings)
    assert 50 < len(copy) < len(live)
    assert copy == live[: len(copy)]
    assert f"backed up {len(copy)} entries" in result.stderr


@SQLITE_ONLY
def test_backup_never_overwrites(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    dest = tmp_path / "precious.sqlite3"
    dest.write_bytes(b"not to be lost")
    code, out, err = run_cli(monkeypatch, capsys, settings, "db", "backup", str(dest))
    assert (code, out) == (2, "")
    assert "exists" in err
    assert len(err.strip().splitlines()) == 1
    assert dest.read_bytes() == b"not to be lost"
    code, _, err = run_cli(monkeypatch, capsys, settings, "db", "backup", str(tmp_path / "a" / "b"))
    assert code == 2
    assert "not a directory" in err


@SQLITE_ONLY
def test_backup_of_a_missing_database_says_so(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    missing = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'nope.db'}"})
    code, _, err = run_cli(monkeypatch, capsys, missing, "db", "backup", str(tmp_path / "b.db"))
    assert code == 2
    assert "no database at" in err
    assert not (tmp_path / "nope.db").exists()
    assert not (tmp_path / "b.db").exists()


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_backup_refuses_postgresql_with_a_pointer(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    code, out, err = run_cli(monkeypatch, capsys, settings, "db", "backup", str(tmp_path / "x"))
    assert (code, out) == (2, "")
    assert "pg_dump" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
