"""The real ``audit-ledger`` command line, run as a subprocess.

Exit codes: 0 success, 1 tampering found (see test_tamper), 2 usage/configuration/input/database
error — always one line on stderr, never a traceback, never a secret.
"""

from __future__ import annotations

import json
import logging
import shutil
import stat
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from audit_ledger.core.checkpoint import parse_verifier_key, verify_checkpoint
from audit_ledger.crypto.keys import load_keys
from audit_ledger.ledger.reads import Query
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings, load_settings
from audit_ledger.storage import jobs
from audit_ledger.storage.engine import create_engine_for_url
from tests.conftest import ORIGIN, PG_ADMIN_URL, create_pg_database, drop_pg_database, pg_url
from tests.support.cli import assert_one_line_error, cli, env_for
from tests.support.factories import event

CANARY_PASSWORD = "canarypw"


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return env_for(settings.database_url, settings.keys_dir)


# --- keys --------------------------------------------------------------------------------------


def test_keys_init_creates_private_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    keys_dir = tmp_path / "new-keys"
    result = cli("keys", "init", "--keys-dir", str(keys_dir), "--origin", ORIGIN)
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in keys_dir.iterdir())
    assert files == ["checkpoint.key", "index.key", "kek.key"]
    for path in keys_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # stdout is exactly the verifier key: the one the signing key's public half gives.
    printed = result.stdout.strip()
    assert len(result.stdout.splitlines()) == 1
    assert parse_verifier_key(printed).name == ORIGIN
    assert printed == load_keys(keys_dir, ORIGIN).signer.verifier.encode()
    for path in keys_dir.iterdir():
        assert path.read_text().strip() not in result.stdout + result.stderr

    before = {p.name: p.read_bytes() for p in keys_dir.iterdir()}
    again = cli("keys", "init", "--origin", ORIGIN, env={"AUDIT_LEDGER_KEYS_DIR": str(keys_dir)})
    line = assert_one_line_error(again)
    assert "overwrite" in line
    assert again.stdout == ""
    assert {p.name: p.read_bytes() for p in keys_dir.iterdir()} == before


def test_missing_keys_is_a_clear_one_line_error(tmp_path: Path) -> None:
    empty = tmp_path / "no-keys"
    empty.mkdir()
    result = cli("verify", env=env_for(f"sqlite:///{tmp_path / 'x.sqlite3'}", empty))
    line = assert_one_line_error(result)
    assert "key file" in line
    assert "keys init" in line


# --- database ----------------------------------------------------------------------------------


def test_unreachable_database_is_one_line_without_the_password(keys_dir: Path) -> None:
    url = f"postgresql://postgres:{CANARY_PASSWORD}@127.0.0.1:1/x"
    for args in (("verify",), ("db", "upgrade")):
        result = cli(*args, env=env_for(url, keys_dir))
        line = assert_one_line_error(result)
        assert "unreachable" in line
        assert CANARY_PASSWORD not in result.stdout + result.stderr


def test_db_grants_prints_least_privilege_grants() -> None:
    result = cli("db", "grants", "--role", "app")
    assert result.returncode == 0, result.stderr
    statements = result.stdout.strip().splitlines()
    assert statements
    rules = ("DELETE FROM audit_ledger_purge_rules", "INSERT INTO audit_ledger_purge_rules ")
    assert all(s.startswith(("GRANT ", "REVOKE ", *rules)) and s.endswith(";") for s in statements)
    assert "GRANT SELECT, INSERT ON entries, " in result.stdout
    for line in statements:
        if line.startswith("GRANT") and ("UPDATE" in line or "DELETE" in line):
            # Only the tables the design lets change get UPDATE/DELETE, and never entries.
            assert " entries" not in line.split(" ON ")[1], line
    bad = cli("db", "grants", "--role", "App; DROP TABLE entries")
    assert "role name" in assert_one_line_error(bad)


def test_db_upgrade_on_a_fresh_database(backend: str, tmp_path: Path, keys_dir: Path) -> None:
    name = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    else:
        name = create_pg_database()
        url = pg_url(name)
    try:
        env = env_for(url, keys_dir)
        for _ in range(2):  # idempotent
            result = cli("db", "upgrade", env=env)
            assert result.returncode == 0, result.stderr
            assert "Traceback" not in result.stderr
        assert "empty" in assert_one_line_error(cli("checkpoint", env=env))
        led = Ledger.open(
            load_settings(database_url=url, keys_dir=keys_dir, checkpoint_origin=ORIGIN)
        )
        try:
            led.check_schema()
            led.appends.append(led.appends.prepare_batch([event()]), "bot")
            assert led.verification.run().ok
        finally:
            led.close()
    finally:
        if name is not None:
            drop_pg_database(name)


# --- append, checkpoint, verify ----------------------------------------------------------------

CANARY_AMOUNT = "CANARY-AMOUNT-9q"


def test_bulk_import_stops_at_a_bad_line_and_reruns_idempotently(
    env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    raws = [event(), event("data_privacy_events"), event(), event("security_events"), event()]
    bad = json.loads(json.dumps(raws[2]))
    bad["data"]["amount"] = CANARY_AMOUNT
    lines = [json.dumps(r) for r in raws]
    lines[2] = json.dumps(bad)
    lines.insert(4, "")  # a blank line: skipped, but still counted in line numbers
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    result = cli("append", str(path), env=env)
    line = assert_one_line_error(result)
    assert "line 3" in line
    assert "committed before it: 2" in line
    assert "data.amount" in line
    assert CANARY_AMOUNT not in result.stdout + result.stderr

    assert _size(settings) == 2

    # The corrected file, fed on stdin this time: the first two lines are already there.
    lines[2] = json.dumps(raws[2])
    fixed = "\n".join(lines) + "\n"
    result = cli("append", "-", "--batch-size", "2", env=env, stdin=fixed)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"appended": 3, "already_present": 2}

    led = Ledger.open(settings)
    try:
        page = led.reads.page_for(["auditor"], Query())
        assert [v.header["event_id"] for v in page.events] == [r["event_id"] for r in raws]
        assert {v.header["writer"] for v in page.events} == {"cli"}
        officer = led.reads.page_for(["compliance_officer"], Query())
        assert [v.data for v in officer.events] == [
            r["data"] for r in raws if r["category"] == "financial_transactions"
        ]
    finally:
        led.close()

    # A signed checkpoint that verifies against the published verifier key.
    result = cli("checkpoint", env=env)
    assert result.returncode == 0, result.stderr
    verifier = parse_verifier_key(load_keys(settings.keys_dir, ORIGIN).signer.verifier.encode())
    checkpoint = verify_checkpoint(result.stdout, verifier)
    assert (checkpoint.origin, checkpoint.size) == (ORIGIN, 5)

    result = cli("verify", "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert (report["size"], report["checkpoints"], report["problem"]) == (5, 1, None)
    assert report["root"] == checkpoint.root_hash.hex()


def _size(settings: Settings) -> int:
    led = Ledger.open(settings)
    try:
        return led.log.size()
    finally:
        led.close()


@pytest.fixture
def sqlite_env(sqlite_template: Path, keys_dir: Path, tmp_path: Path) -> dict[str, str]:
    """A migrated SQLite ledger for CLI checks that do not depend on the backend."""
    path = tmp_path / "cli.sqlite3"
    shutil.copyfile(sqlite_template, path)
    return env_for(f"sqlite:///{path}", keys_dir)


def test_bad_input_is_a_one_line_error(sqlite_env: dict[str, str], tmp_path: Path) -> None:
    env = sqlite_env
    missing = cli("append", str(tmp_path / "nope.jsonl"), env=env)
    assert "cannot read" in assert_one_line_error(missing)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    assert_one_line_error(cli("append", str(binary), env=env))
    not_json = cli("append", env=env, stdin=json.dumps(event()) + "\n{not json\n")
    line = assert_one_line_error(not_json)
    assert "line 2" in line
    assert "committed before it: 1" in line
    usage = cli("append", "--batch-size", "0", env=env)
    assert "--help" in assert_one_line_error(usage)


# --- least-privilege role ----------------------------------------------------------------------


@pytest.fixture
def app_role(backend: str, settings: Settings) -> Iterator[str]:
    """A login role created for the test (PostgreSQL), dropped afterwards."""
    role = f"al_app_{uuid.uuid4().hex[:10]}"
    if backend != "postgresql":
        yield role
        return
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        yield role
    finally:
        with psycopg.connect(
            make_url(settings.database_url).render_as_string(hide_password=False), autocommit=True
        ) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _as_role(settings: Settings, role: str, statement: str, **params: Any) -> str | None:
    """Run one statement under SET ROLE; None if it worked, else the database's message."""
    engine = create_engine_for_url(settings.database_url)
    try:
        with engine.connect() as conn:
            trans = conn.begin()
            conn.execute(text(f"SET LOCAL ROLE {role}"))
            try:
                conn.execute(text(statement), params)
            except DBAPIError as exc:
                return str(exc.orig).splitlines()[0]
            finally:
                trans.rollback()
        return None
    finally:
        engine.dispose()


def test_grants_apply_least_privilege(
    backend: str, settings: Settings, env: dict[str, str], app_role: str
) -> None:
    """``db grants --apply`` gives a role exactly enough: the service runs with it, and the
    role can neither change nor remove ledger rows."""
    result = cli("db", "grants", "--role", app_role, "--apply", env=env)
    if backend == "sqlite":
        assert "PostgreSQL" in assert_one_line_error(result)
        return
    assert result.returncode == 0, result.stderr

    url = make_url(settings.database_url).set(username=app_role, password=None)
    app = Ledger.open(
        load_settings(
            database_url=url.render_as_string(hide_password=False),
            keys_dir=settings.keys_dir,
            checkpoint_origin=ORIGIN,
        )
    )
    try:
        app.check_schema()
        app.appends.append(
            app.appends.prepare_batch([event(), event("data_privacy_events", user_id=7)]), "bot"
        )
        assert app.log.checkpoint() is not None
        assert len(app.reads.page_for(["auditor"], Query()).events) == 2
        hold = app.holds.create("category", value="security_events")
        app.holds.release(hold.hold_id)
        app.retention.run()
        app.erasure.erase_subject(7)
        jobs.record_run(app.store, "retention", 1, "2026-11-28T00:00:00.000000Z", "ok")
        jobs.record_run(app.store, "retention", 2, "2026-11-28T00:01:00.000000Z", "ok")
        assert jobs.last_tick(app.store, "retention") == 2
        token = app.principals.add("bot-1", ["writer"])
        assert app.principals.authenticate(token).name == "bot-1"
        app.principals.revoke("bot-1")
        report = app.verification.run()
        assert report.ok, report.problem
    finally:
        app.close()

    insert = (
        "INSERT INTO entries (seq, event_id, category, event_type, occurred_at, recorded_at,"
        " writer, leaf_hash, leaf) VALUES (99, :id, 'c', 't', :ts, :ts, 'w', :b, :b)"
    )
    ts = "2026-11-28T00:00:00.000000Z"
    assert _as_role(settings, app_role, "SELECT count(*) FROM entries") is None
    assert _as_role(settings, app_role, insert, id=str(uuid.uuid4()), ts=ts, b=b"x") is None
    refused = {}
    for statement in (
        "UPDATE entries SET writer = 'x'",
        "DELETE FROM entries",
        "TRUNCATE entries CASCADE",
        "UPDATE entry_refs SET value = 'x'",
        "DELETE FROM tree_nodes",
        "UPDATE payloads SET blob = ''",
        "DELETE FROM data_keys",
        "UPDATE data_keys SET scope_value = 'x'",
        "DELETE FROM checkpoints",
        "DELETE FROM payload_purges",
        "DELETE FROM legal_holds",
        "UPDATE legal_holds SET scope = 'order'",
        "UPDATE ledger_head SET id = 2",
        "DELETE FROM principals",
        "CREATE TABLE sneaky (x int)",
    ):
        refused[statement] = _as_role(settings, app_role, statement)
    not_denied = {k: v for k, v in refused.items() if v is None or "permission denied" not in v}
    assert not_denied == {}


def test_library_warnings_are_one_line_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library's warning (psycopg, SQLAlchemy) in a CLI run: one line, no traceback."""
    from audit_ledger.cli import _stderr_warnings

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # the handler binds the captured stream
    _stderr_warnings()
    try:
        raise ValueError("boom")  # noqa: TRY301 - a traceback for the record to carry
    except ValueError:
        logging.getLogger("sqlalchemy.pool").warning(
            "Exception during reset\nor close", exc_info=True
        )
    logging.getLogger("psycopg").info("not shown")
    err = capsys.readouterr().err
    assert err == "audit-ledger: warning: sqlalchemy.pool: Exception during reset or close\n"
