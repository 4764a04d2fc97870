"""Attacks by the serving database role (issue #12, DESIGN §5): refused by PostgreSQL, found by
``verify`` on SQLite.

On PostgreSQL a real ``LOGIN`` role gets ``db grants --apply`` and connects as itself; each
attack (a forged principal, an un-revoked principal, changed roles, a forged purge of a
financial payload, a data key destroyed without an operation) must be refused by the database.
Each test then switches that protection off — the owner grants the direct privilege back — and
shows the same statements now go through, so a refusal for any other reason (a typo, a missing
table) cannot pass for the protection; ``verify`` then still names the change. On SQLite, which
has no roles, the attacker holds the file: the triggers are dropped first (anyone with the file
can), the same tampering is made, and ``verify`` exits 1 naming what changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from alembic import command
from psycopg import sql
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError

from audit_ledger.core.commitments import PURGE_REF, purge_commitment
from audit_ledger.errors import AuthenticationError, StorageError
from audit_ledger.ledger import admin
from audit_ledger.ledger.console_sessions import MAX_SECONDS, TOUCH_SECONDS, ConsoleSessions
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings, load_settings
from audit_ledger.storage import migrations
from audit_ledger.storage.engine import create_engine_for_url
from tests.conftest import ORIGIN, PG_ADMIN_URL, create_pg_database, drop_pg_database, pg_url
from tests.support.cli import cli, env_for, run_cli
from tests.support.factories import event

NOW = "2026-12-01T00:00:00.000000Z"
FORGED_TOKEN = "alt_" + "A" * 43


@dataclass
class Scene:
    """A log with principals, payloads and a real retention run, and a way in as the attacker."""

    ledger: Ledger
    settings: Settings
    backend: str
    #: Runs statements as the attacker in one transaction; None if they worked, else the
    #: database's first line of error.
    attack: Callable[[list[tuple[str, dict[str, object]]]], str | None]
    #: Gives the serving role a direct privilege back (PostgreSQL; the protection switched off).
    regrant: Callable[[str], None]
    bot_token: str
    retired_token: str
    financial_seq: int
    financial_key: str
    retention_seq: int
    bot_bound_seq: int


def _owner_exec(url: str, statements: list[str]) -> None:
    engine = create_engine_for_url(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def serving_role(backend: str, settings: Settings) -> Iterator[str | None]:
    """A real LOGIN role with ``db grants --apply`` (PostgreSQL); None on SQLite."""
    if backend == "sqlite":
        yield None
        return
    role = "al_serving_" + hashlib.sha256(settings.database_url.encode()).hexdigest()[:10]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        admin.apply_grants(settings.database_url, role)
        yield role
    finally:
        owner = make_url(settings.database_url).render_as_string(hide_password=False)
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def scene(backend: str, ledger: Ledger, settings: Settings, serving_role: str | None) -> Scene:
    ledger.appends.append(
        ledger.appends.prepare_batch(
            [event(), event("data_privacy_events", user_id=1), event("security_events")]
        ),
        "bot",
    )
    financial_seq = 0
    bot_token = ledger.principals.add("bot", ["writer"])
    retired_token = ledger.principals.add("retired", ["compliance_officer"])
    ledger.principals.revoke("retired")
    report = ledger.retention.run()  # nothing has expired: a real, empty retention run
    assert report.op_seq is not None
    assert ledger.log.checkpoint() is not None
    rows = {p.name: p for p in ledger.store.principals()}
    financial_key = next(
        k.key_id for k in ledger.store.iter_keys() if k.category == "financial_transactions"
    )
    owner_url = settings.database_url

    if serving_role is None:
        # SQLite: whoever holds the file can drop the triggers, so the attacker does.
        engine = create_engine_for_url(owner_url)
        with engine.begin() as conn:
            names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            for (name,) in names.all():
                conn.execute(text(f'DROP TRIGGER "{name}"'))
        engine.dispose()
        attack_url = owner_url
    else:
        url = make_url(owner_url).set(username=serving_role, password=None)
        attack_url = url.render_as_string(hide_password=False)

    def attack(statements: list[tuple[str, dict[str, object]]]) -> str | None:
        engine = create_engine_for_url(attack_url)
        try:
            with engine.begin() as conn:
                for statement, params in statements:
                    conn.execute(text(statement), params)
        except Exception as exc:  # noqa: BLE001 - the database's refusal is the result
            orig = getattr(exc, "orig", exc)
            return str(orig).splitlines()[0]
        finally:
            engine.dispose()
        return None

    def regrant(statement: str) -> None:
        assert serving_role is not None
        _owner_exec(owner_url, statement.format(role=serving_role).split("; "))

    return Scene(
        ledger,
        settings,
        backend,
        attack,
        regrant,
        bot_token,
        retired_token,
        financial_seq,
        financial_key,
        report.op_seq,
        rows["bot"].bound_seq or 0,
    )


def _forged_run(app: Ledger, seqs: list[int], keys: list[str]) -> None:
    """What the serving process itself (holding the keys) can do at most: append a retention
    run whose header commits to this purge, then call the owner's purge function."""
    with app.store.writer() as tx:
        tx.head()
        op = app.operations.event(
            "retention_run",
            {"categories": {}},
            {PURGE_REF: purge_commitment("retention", seqs, keys)},
        )
        op_seq = app.operations.record_in(tx, op)
        tx.purge(
            op_seq, "retention", seqs=seqs, key_ids=keys, when=NOW, destroy_keys=tx.destroy_keys
        )


def _verify(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    code, out, err = run_cli(monkeypatch, capsys, scene.settings, "verify")
    return code, out + err


def _refused_then_detected(  # noqa: PLR0917 - one call shape shared by every attack
    scene: Scene,
    statements: list[tuple[str, dict[str, object]]],
    regrant: str,
    detected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """PostgreSQL refuses ``statements`` as the serving role; with ``regrant`` (the protection
    off) they pass. Either way, once they are in, verify exits 1 naming ``detected``."""
    code, output = _verify(scene, monkeypatch, capsys)
    assert code == 0, output
    if scene.backend == "postgresql":
        refusal = scene.attack(statements)
        assert refusal is not None
        assert "permission denied" in refusal, refusal
        assert _verify(scene, monkeypatch, capsys)[0] == 0
        scene.regrant(regrant)
    assert scene.attack(statements) is None
    code, output = _verify(scene, monkeypatch, capsys)
    assert code == 1, output
    assert detected in output, output


def test_forged_principal(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row with a token of the attacker's choosing and every role, pinned on the binding
    entry of another principal: refused, and after the fact neither accepted nor unnoticed."""
    forged = [
        (
            (
                "INSERT INTO principals (name, token_hash, roles, created_at, bound_seq)"
                " VALUES ('mallory', :h, :r, :t, :b)"
            ),
            {
                "h": hashlib.sha256(FORGED_TOKEN.encode()).digest(),
                "r": "admin,auditor,compliance_officer,privacy_officer,security_team,writer",
                "t": NOW,
                "b": scene.bot_bound_seq,
            },
        )
    ]
    _refused_then_detected(
        scene, forged, "GRANT INSERT ON principals TO {role}", "'mallory'", monkeypatch, capsys
    )
    with pytest.raises(AuthenticationError, match="tampered"):
        scene.ledger.principals.authenticate(FORGED_TOKEN)


def test_unrevoked_principal(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unrevoke = [
        (
            "UPDATE principals SET revoked_at = NULL, revoked_seq = NULL WHERE name = 'retired'",
            {},
        )
    ]
    _refused_then_detected(
        scene,
        unrevoke,
        "GRANT UPDATE ON principals TO {role}",
        "principal 'retired' is active but its token was revoked",
        monkeypatch,
        capsys,
    )
    with pytest.raises(AuthenticationError, match="revoked"):
        scene.ledger.principals.authenticate(scene.retired_token)


def test_changed_roles(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    promote = [("UPDATE principals SET roles = 'admin,writer' WHERE name = 'bot'", {})]
    _refused_then_detected(
        scene,
        promote,
        "GRANT UPDATE ON principals TO {role}",
        "principal 'bot' differs from the entry that binds it",
        monkeypatch,
        capsys,
    )
    with pytest.raises(AuthenticationError, match="tampered"):
        scene.ledger.principals.authenticate(scene.bot_token)


def test_forged_purge_of_a_financial_payload(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A purge record pinned on a real retention run, then the permanent payload deleted."""
    purge = [
        (
            "INSERT INTO payload_purges (seq, op_seq, reason) VALUES (:s, :o, 'retention')",
            {"s": scene.financial_seq, "o": scene.retention_seq},
        ),
        ("DELETE FROM payloads WHERE seq = :s", {"s": scene.financial_seq}),
    ]
    _refused_then_detected(
        scene,
        purge,
        "GRANT INSERT ON payload_purges TO {role}; GRANT DELETE ON payloads TO {role}",
        f"seq {scene.financial_seq}",
        monkeypatch,
        capsys,
    )


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_owner_functions_refuse_what_the_entry_does_not_authorise(scene: Scene) -> None:
    """The serving role may call the owner's functions, but only for what the authorising
    entry commits to and the policy allows: not a financial payload, not a key the run did not
    list, not a principal another entry binds."""
    call = "SELECT audit_ledger_purge(:o, :r, ARRAY[:s]::bigint[], ARRAY[]::text[], :t)"
    for op_seq, reason in ((scene.retention_seq, "retention"), (scene.bot_bound_seq, "erasure")):
        refusal = scene.attack(
            [(call, {"o": op_seq, "r": reason, "s": scene.financial_seq, "t": NOW})]
        )
        assert refusal is not None
        assert "audit-ledger" in refusal, refusal
    destroy = "SELECT audit_ledger_purge(:o, 'retention', ARRAY[]::bigint[], ARRAY[:k], :t)"
    refusal = scene.attack(
        [(destroy, {"o": scene.retention_seq, "k": scene.financial_key, "t": NOW})]
    )
    assert refusal is not None
    assert "does not authorise" in refusal, refusal
    bind = "SELECT audit_ledger_bind_principal(:o, 'mallory', 'admin', :h, :t)"
    refusal = scene.attack([(bind, {"o": scene.bot_bound_seq, "h": b"\x00" * 32, "t": NOW})])
    assert refusal is not None
    assert "does not authorise" in refusal, refusal


def test_key_destroyed_without_an_operation(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The financial month's data key destroyed and pinned on a real retention run that never
    destroyed it (which would make every financial payload of the month unreadable)."""
    destroy = [
        (
            (
                "UPDATE data_keys SET wrapped = NULL, destroyed_at = :t, destroyed_by_seq = :o"
                " WHERE key_id = :k"
            ),
            {"t": NOW, "o": scene.retention_seq, "k": scene.financial_key},
        )
    ]
    _refused_then_detected(
        scene,
        destroy,
        "GRANT UPDATE ON data_keys TO {role}",
        scene.financial_key,
        monkeypatch,
        capsys,
    )


def test_rotation_keeps_the_name_and_retires_the_old_token(
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
) -> None:
    old = ledger.principals.add("bot", ["writer"])
    assert ledger.principals.authenticate(old).name == "bot"
    code, out, err = run_cli(monkeypatch, capsys, settings, "principals", "rotate", "bot")
    assert code == 0, err
    new = out.strip().splitlines()[-1]
    assert new != old
    fresh = Ledger.open(settings)  # no cached look-up of the old token
    try:
        assert fresh.principals.authenticate(new).name == "bot"
        with pytest.raises(AuthenticationError, match="unknown"):  # its hash is gone
            fresh.principals.authenticate(old)
        receipt = fresh.appends.append(fresh.appends.prepare_batch([event()]), "bot")[0]
        header = fresh.store.entry(receipt.seq)
        assert header is not None
        assert header.writer == "bot"
        report = fresh.verification.run()
        assert report.ok, report.problem
    finally:
        fresh.close()
    code, _, err = run_cli(monkeypatch, capsys, settings, "principals", "rotate", "nobody")
    assert code == 2
    assert "no active principal" in err


@pytest.mark.process
def test_verify_exits_1_on_a_forged_principal_as_a_real_process(
    backend: str, ledger: Ledger, settings: Settings, keys_dir: Path
) -> None:
    """The real ``audit-ledger verify``: a row written around the functions (here by the owner,
    who may) that no entry binds is reported, exit 1."""
    ledger.appends.append(ledger.appends.prepare_batch([event()]), "bot")
    ledger.principals.add("bot", ["writer"])
    engine = create_engine_for_url(settings.database_url)
    with engine.begin() as conn:
        if backend == "sqlite":
            conn.execute(text("DROP TRIGGER principals_unauthorised_insert"))
        conn.execute(
            text(
                "INSERT INTO principals (name, token_hash, roles, created_at)"
                " VALUES ('mallory', :h, 'admin', :t)"
            ),
            {"h": hashlib.sha256(FORGED_TOKEN.encode()).digest(), "t": NOW},
        )
    engine.dispose()
    result = cli("verify", env=env_for(settings.database_url, keys_dir))
    assert result.returncode == 1, result.stderr
    assert "principal 'mallory' is not bound to the chain" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def unmigrated_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.sqlite3'}"
        return
    name = create_pg_database()
    try:
        yield pg_url(name)
    finally:
        drop_pg_database(name)


def test_principals_from_before_0004_are_refused_until_attested(
    unmigrated_url: str,
    keys_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The upgrade story: a token issued at schema 0003 has no binding entry, so after the
    upgrade it is refused and ``verify`` names it, until the owner's ``principals attest``
    binds it (the same token keeps working; nothing else changes)."""
    engine = create_engine_for_url(unmigrated_url, create=True)
    config = migrations.alembic_config()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0003")
            conn.execute(
                text(
                    "INSERT INTO principals (name, token_hash, roles, created_at)"
                    " VALUES ('legacy-bot', :h, 'writer', :t)"
                ),
                {"h": hashlib.sha256(FORGED_TOKEN.encode()).digest(), "t": NOW},
            )
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    finally:
        engine.dispose()
    settings = load_settings(
        database_url=unmigrated_url, keys_dir=keys_dir, checkpoint_origin=ORIGIN
    )
    ledger = Ledger.open(settings)
    try:
        ledger.appends.append(ledger.appends.prepare_batch([event()]), "bot")
        with pytest.raises(AuthenticationError, match="unbound"):
            ledger.principals.authenticate(FORGED_TOKEN)
        code, out, err = run_cli(monkeypatch, capsys, settings, "verify")
        assert code == 1
        assert "principal 'legacy-bot' is not bound to the chain" in out + err
        code, out, err = run_cli(monkeypatch, capsys, settings, "principals", "attest")
        assert code == 0, err
        assert out.split() == ["legacy-bot"]
        assert ledger.principals.authenticate(FORGED_TOKEN).name == "legacy-bot"
        code, out, err = run_cli(monkeypatch, capsys, settings, "verify")
        assert code == 0, out + err
        code, out, err = run_cli(monkeypatch, capsys, settings, "principals", "attest")
        assert out.split() == []  # once is enough
    finally:
        ledger.close()


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_well_formed_forged_run_cannot_purge_what_the_policy_keeps(
    scene: Scene, serving_role: str
) -> None:
    """The serving process itself (with the keys) appends a retention run whose header commits
    to the purge — the strongest the serving role can do — and the owner's function still
    refuses: a financial payload is permanent, a security event's has not expired. Only the
    honest empty run's entries stay; nothing is purged."""
    url = make_url(scene.settings.database_url).set(username=serving_role, password=None)
    app = Ledger.open(
        load_settings(
            database_url=url.render_as_string(hide_password=False),
            keys_dir=scene.settings.keys_dir,
            checkpoint_origin=ORIGIN,
        )
    )

    try:
        for seq in (scene.financial_seq, 2):
            with pytest.raises(StorageError) as refused:
                _forged_run(app, [seq], [])
            assert "the policy does not allow retention to purge payload" in str(
                refused.value.__cause__
            )
            entry = app.store.entry(seq)
            assert entry is not None
            assert entry.payload is not None
        report = app.verification.run()
        assert report.ok, report.problem
        # The protection off (the owner's rules let retention purge everything at once): the
        # forged run goes through, and verify names the purge its sealed record does not list.
        _owner_exec(
            scene.settings.database_url,
            ["UPDATE audit_ledger_purge_rules SET retention = '0 days'"],
        )
        _forged_run(app, [scene.financial_seq], [])
        report = app.verification.run()
        assert report.problem is not None
        assert report.problem.seq == scene.financial_seq
        assert "payload purge not recorded" in report.problem.reason
    finally:
        app.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_triggers_refuse_casual_tampering(ledger: Ledger, settings: Settings) -> None:
    """With its triggers in place (nobody dropped them), SQLite refuses what it can check: each
    change must name an authorising entry of the right kind, retention never purges a financial
    payload, a revoked principal stays revoked and roles do not change."""
    ledger.appends.append(ledger.appends.prepare_batch([event(), event("security_events")]), "bot")
    ledger.principals.add("bot", ["writer"])
    ledger.principals.add("retired", ["auditor"])
    ledger.principals.revoke("retired")
    hold = ledger.holds.create("category", value="security_events")
    op = ledger.retention.run().op_seq
    bound = next(p.bound_seq for p in ledger.store.principals() if p.name == "bot")
    forged = hashlib.sha256(FORGED_TOKEN.encode()).digest()
    attempts = {
        "unbound principal": (
            "INSERT INTO principals (name, token_hash, roles, created_at)"
            " VALUES ('m', :h, 'admin', :t)"
        ),
        "principal bound to a retention run": (
            "INSERT INTO principals (name, token_hash, roles, created_at, bound_seq)"
            " VALUES ('m', :h, 'admin', :t, :op)"
        ),
        "un-revoke": "UPDATE principals SET revoked_at = NULL WHERE name = 'retired'",
        "roles": "UPDATE principals SET roles = 'admin' WHERE name = 'bot'",
        "token swap": "UPDATE principals SET token_hash = :h WHERE name = 'bot'",
        "delete principal": "DELETE FROM principals WHERE name = 'bot'",
        "financial purge": (
            "INSERT INTO payload_purges (seq, op_seq, reason) VALUES (0, :op, 'retention')"
        ),
        "purge by a principal entry": (
            "INSERT INTO payload_purges (seq, op_seq, reason) VALUES (1, :bound, 'retention')"
        ),
        "key destroyed by a principal entry": (
            "UPDATE data_keys SET wrapped = NULL, destroyed_at = :t, destroyed_by_seq = :bound"
        ),
        "hold released by a retention run": (
            "UPDATE legal_holds SET released_by = 'x', released_seq = :op WHERE hold_id = :hold"
        ),
    }
    params = {"h": forged, "t": NOW, "op": op, "bound": bound, "hold": hold.hold_id}
    engine = create_engine_for_url(settings.database_url)
    try:
        for statement in attempts.values():
            with pytest.raises(DBAPIError, match="audit-ledger"), engine.begin() as conn:
                conn.execute(text(statement), params)
    finally:
        engine.dispose()
    report = ledger.verification.run()
    assert report.ok, report.problem


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_serving_role_cannot_release_holds_or_touch_principals(scene: Scene) -> None:
    hold = scene.ledger.holds.create("category", value="security_events")
    for statement, params in (
        (
            "UPDATE legal_holds SET released_by = 'x', released_seq = :op WHERE hold_id = :h",
            {"op": scene.retention_seq, "h": hold.hold_id},
        ),
        ("UPDATE principals SET token_hash = :h WHERE name = 'bot'", {"h": b"\x01" * 32}),
        ("DELETE FROM principals", {}),
        ("DELETE FROM audit_ledger_purge_rules", {}),
        ("UPDATE audit_ledger_purge_rules SET retention = '0 days'", {}),
    ):
        refusal = scene.attack([(statement, params)])
        assert refusal is not None
        assert "permission denied" in refusal, (statement, refusal)
    release = "SELECT audit_ledger_release_hold(:op, :h, 'x')"
    refusal = scene.attack([(release, {"op": scene.retention_seq, "h": hold.hold_id})])
    assert refusal is not None
    assert "is not a ledger_operations legal_hold_released entry" in refusal, refusal
    scene.ledger.holds.release(hold.hold_id)  # the honest path still works


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_purge_function_honours_holds_and_keeps_keys_with_payloads(
    scene: Scene, serving_role: str
) -> None:
    """Even where the owner's rules allow a purge, the function refuses to purge a held entry
    or to destroy a data key that still encrypts a stored payload."""
    _owner_exec(
        scene.settings.database_url,
        ["UPDATE audit_ledger_purge_rules SET retention = '0 days'"],
    )
    hold = scene.ledger.holds.create("category", value="security_events")
    sec = next(k.key_id for k in scene.ledger.store.iter_keys() if k.category == "security_events")
    url = make_url(scene.settings.database_url).set(username=serving_role, password=None)
    app = Ledger.open(
        load_settings(
            database_url=url.render_as_string(hide_password=False),
            keys_dir=scene.settings.keys_dir,
            checkpoint_origin=ORIGIN,
        )
    )

    def refusal(seqs: list[int], keys: list[str]) -> str:
        with pytest.raises(StorageError) as refused:
            _forged_run(app, seqs, keys)
        return str(refused.value.__cause__)

    try:
        assert "under an active legal hold" in refusal([2], [])
        assert "still encrypts a stored payload" in refusal([], [sec])
        app.holds.release(hold.hold_id)
        _forged_run(app, [2], [])  # released, and the rules allow it: the purge goes through
        _forged_run(app, [], [sec])  # its last payload gone, the key may go too
    finally:
        app.close()


def test_the_serving_role_keeps_console_sessions(
    ledger: Ledger, settings: Settings, serving_role: str | None
) -> None:
    """``db grants`` gives the serving role what server-side console sessions need (issue #14):
    sign in, resume with a ``seen_at`` write, sign out, and the sweep's DELETE."""
    url = settings.database_url
    if serving_role is not None:
        url = make_url(url).set(username=serving_role).render_as_string(hide_password=False)
    token = ledger.principals.add("officer", ["compliance_officer"])
    serving = Ledger.open(settings.model_copy(update={"database_url": url}))
    try:
        now = [2_000_000_000.0]
        sessions = ConsoleSessions(serving.principals, serving.store, lambda: now[0])
        session, cookie = sessions.sign_in(token)
        now[0] += TOUCH_SECONDS
        assert sessions.resume(cookie).seen_at == int(now[0])
        sessions.sign_out(session)
        with pytest.raises(AuthenticationError, match="session_ended"):
            sessions.resume(cookie)
        now[0] += MAX_SECONDS + 1
        sessions.sign_in(token)  # sweeps the ended, expired one
        with pytest.raises(AuthenticationError, match=r"^session$"):
            sessions.resume(cookie)
    finally:
        serving.close()
