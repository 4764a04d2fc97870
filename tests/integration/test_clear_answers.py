"""Clear answers (issue #12 item 5): a mistyped SQLite URL never creates a database file, and
``db grants --apply`` for a role that does not exist names it and says how to create it.

Every command but ``db upgrade`` (and ``serve``'s first start, which migrates) answers a missing
SQLite file with one line naming the path; the file is still missing afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from audit_ledger.errors import ConfigError
from audit_ledger.settings import Settings
from audit_ledger.storage.engine import create_engine_for_url
from tests.support.cli import assert_one_line_error, cli, env_for, run_cli

COMMANDS = [
    ("verify",),
    ("checkpoint",),
    ("principals", "list"),
    ("principals", "add", "bot", "--role", "writer"),
    ("holds", "list"),
    ("retention", "run", "--dry-run"),
    ("erasure", "request", "--user-id", "7"),
    ("keys", "rotate-kek"),
    ("append", "/dev/null"),
]


def expected(path: Path) -> str:
    return (
        f"audit-ledger: error: no database at {path}; run 'audit-ledger db upgrade' or check "
        "AUDIT_LEDGER_DATABASE_URL"
    )


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_missing_sqlite_file_is_named_and_not_created(
    args: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    missing = tmp_path / "typo" / ".." / "ledgr.sqlite3"
    settings = Settings(database_url=f"sqlite:///{missing}", keys_dir=keys_dir)
    code, out, err = run_cli(monkeypatch, capsys, settings, *args)
    assert (code, out) == (2, "")
    assert err.strip() == expected(missing)
    assert not (tmp_path / "ledgr.sqlite3").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]


@pytest.mark.process
def test_the_real_cli_says_it_in_one_line_then_db_upgrade_creates_it(
    keys_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.sqlite3"
    env = env_for(f"sqlite:///{path}", keys_dir)
    assert assert_one_line_error(cli("verify", env=env)) == expected(path)
    assert not path.exists()
    upgrade = cli("db", "upgrade", env=env)
    assert upgrade.returncode == 0, upgrade.stderr
    assert path.exists()
    verify = cli("verify", env=env)
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith("ok: 0 entries")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_file_removed_after_the_engine_was_made_is_not_recreated(settings: Settings) -> None:
    path = Path(settings.database_url.removeprefix("sqlite:///"))
    engine = create_engine_for_url(settings.database_url)
    try:
        path.unlink()
        with pytest.raises(ConfigError, match="no database at"), engine.connect():
            pass
        assert not path.exists()
    finally:
        engine.dispose()
    with pytest.raises(ConfigError, match="no database at"):
        create_engine_for_url(settings.database_url)
    create_engine_for_url(settings.database_url, create=True).dispose()  # allowed, lazily


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_grants_for_a_missing_role_name_it(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(
        monkeypatch, capsys, settings, "db", "grants", "--role", "nosuchrole", "--apply"
    )
    assert (code, out) == (2, "")
    [line] = err.strip().splitlines()
    assert "role nosuchrole does not exist" in line
    assert "CREATE ROLE nosuchrole LOGIN" in line
    assert "UndefinedObject" not in line
