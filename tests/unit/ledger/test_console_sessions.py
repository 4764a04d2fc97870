"""Console sessions (issue #14): server-side rows shared by every process, idle and absolute
expiry, CSRF bound to one session, sign-out seen by every worker, ``seen_at`` written at most
every 30 s, expired rows swept, and a token rotation or revocation ending sessions.

On both backends, through the real principals and ``console_sessions`` tables (the re-check on
every request is the point); only the clock is the test's. Two :class:`Ledger` objects opened
on one database stand for two workers of ``serve --workers 2`` (the real two-process case is
``tests/integration/console/test_session_workers.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from audit_ledger.errors import AuthenticationError, PermissionDeniedError
from audit_ledger.ledger.console_sessions import (
    IDLE_SECONDS,
    MAX_SECONDS,
    SWEEP_SECONDS,
    TOUCH_SECONDS,
    ConsoleSessions,
)
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from audit_ledger.storage.schema import console_sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessions(ledger: Ledger, clock: Clock) -> ConsoleSessions:
    return ConsoleSessions(ledger.principals, ledger.store, clock)


@pytest.fixture
def other_worker(settings: Settings, clock: Clock) -> Iterator[ConsoleSessions]:
    """The same database opened again: what another worker process sees."""
    ledger = Ledger.open(settings)
    try:
        yield ConsoleSessions(ledger.principals, ledger.store, clock)
    finally:
        ledger.close()


def rows(ledger: Ledger) -> list[tuple[bytes, int, int | None]]:
    t = console_sessions.c
    with ledger.store.reader() as conn:
        found = conn.execute(select(t.sid_hash, t.seen_at, t.ended_at).order_by(t.issued_at))
        return [(bytes(r[0]), int(r[1]), r[2]) for r in found]


def test_a_session_resumes_with_the_principals_current_roles(
    ledger: Ledger, sessions: ConsoleSessions
) -> None:
    token = ledger.principals.add("officer", ["compliance_officer"])
    session, cookie = sessions.sign_in(token)
    assert token not in cookie
    assert len(cookie) == 43  # 256 random bits
    resumed = sessions.resume(cookie)
    assert resumed.principal == session.principal
    assert resumed.sid == session.sid == cookie
    # The table holds the id's SHA-256 only: a database reader cannot resume the session.
    (stored,) = rows(ledger)
    assert stored[0] == hashlib.sha256(cookie.encode()).digest()
    t = console_sessions.c
    with ledger.store.reader() as conn:
        values = conn.execute(select(console_sessions)).one()
    assert all(cookie not in str(v) and cookie.encode() != v for v in values)
    assert values._mapping[t.token_hash.name] != token.encode()


def test_idle_and_absolute_timeouts(
    ledger: Ledger, sessions: ConsoleSessions, clock: Clock
) -> None:
    token = ledger.principals.add("auditor1", ["auditor"])
    _, cookie = sessions.sign_in(token)
    clock.now += IDLE_SECONDS + 1
    with pytest.raises(AuthenticationError, match="session_expired"):
        sessions.resume(cookie)
    # Used every few minutes, a session still ends at the absolute limit.
    _, cookie = sessions.sign_in(token)
    start = clock.now
    while clock.now - start < MAX_SECONDS - IDLE_SECONDS:
        clock.now += IDLE_SECONDS - 60
        sessions.resume(cookie)
    clock.now = start + MAX_SECONDS + 1
    with pytest.raises(AuthenticationError, match="session_expired"):
        sessions.resume(cookie)


def test_an_unknown_or_altered_cookie_is_refused(ledger: Ledger, sessions: ConsoleSessions) -> None:
    token = ledger.principals.add("officer", ["compliance_officer"])
    _, cookie = sessions.sign_in(token)
    altered = cookie[:-1] + ("A" if cookie[-1] != "A" else "B")
    for forged in (altered, "", "x" * 43, "x" * 80, "%%%", "é" * 43, cookie + "A"):
        with pytest.raises(AuthenticationError, match=r"^session$"):
            sessions.resume(forged)


def test_revocation_ends_sessions_at_once(ledger: Ledger, sessions: ConsoleSessions) -> None:
    token = ledger.principals.add("officer", ["compliance_officer"])
    _, cookie = sessions.sign_in(token)
    ledger.principals.revoke("officer")
    with pytest.raises(AuthenticationError, match="revoked"):
        sessions.resume(cookie)


def test_a_tampered_principal_row_ends_its_sessions(
    ledger: Ledger, sessions: ConsoleSessions
) -> None:
    """Roles raised in the table behind the ledger's back: the session is refused, as the
    token would be, instead of resuming with the forged roles."""
    token = ledger.principals.add("officer", ["compliance_officer"])
    _, cookie = sessions.sign_in(token)
    with ledger.store.engine.begin() as conn:
        if ledger.store.dialect == "sqlite":  # someone who can write the file drops the guard
            conn.exec_driver_sql("DROP TRIGGER principals_unauthorised_update")
        conn.exec_driver_sql("UPDATE principals SET roles = 'admin' WHERE name = 'officer'")
    with pytest.raises(AuthenticationError, match="tampered"):
        sessions.resume(cookie)


def test_csrf_tokens_are_bound_to_one_session(ledger: Ledger, sessions: ConsoleSessions) -> None:
    token = ledger.principals.add("officer", ["compliance_officer"])
    first, _ = sessions.sign_in(token)
    second, _ = sessions.sign_in(token)
    sessions.check_csrf(first, sessions.csrf_token(first))
    assert first.sid not in sessions.csrf_token(first)
    # A non-ASCII field is a wrong token, not a TypeError from compare_digest.
    for wrong in (None, "", sessions.csrf_token(second), "é" * 64):
        with pytest.raises(PermissionDeniedError):
            sessions.check_csrf(first, wrong)


def test_sign_out_is_seen_by_every_worker_and_ends_only_that_session(
    ledger: Ledger, sessions: ConsoleSessions, other_worker: ConsoleSessions
) -> None:
    token = ledger.principals.add("officer", ["compliance_officer"])
    first, first_cookie = sessions.sign_in(token)
    _, second_cookie = sessions.sign_in(token)
    other_worker.resume(first_cookie)  # a session is valid on every worker
    sessions.sign_out(first)
    for worker in (sessions, other_worker):
        with pytest.raises(AuthenticationError, match="session_ended"):
            worker.resume(first_cookie)
        worker.resume(second_cookie)


def test_seen_at_is_written_at_most_every_touch_interval(
    ledger: Ledger, sessions: ConsoleSessions, other_worker: ConsoleSessions, clock: Clock
) -> None:
    token = ledger.principals.add("officer", ["compliance_officer"])
    _, cookie = sessions.sign_in(token)
    signed_in = int(clock.now)
    clock.now += TOUCH_SECONDS - 1
    assert sessions.resume(cookie).seen_at == signed_in
    assert rows(ledger)[0][1] == signed_in  # no write
    clock.now += 1
    assert sessions.resume(cookie).seen_at == int(clock.now)
    assert rows(ledger)[0][1] == int(clock.now)
    # Activity on one worker keeps the session alive on the other.
    for _ in range(3):
        clock.now += IDLE_SECONDS - 60
        sessions.resume(cookie)
    other_worker.resume(cookie)


def test_expired_sessions_are_swept_on_sign_in(
    ledger: Ledger, sessions: ConsoleSessions, clock: Clock
) -> None:
    token = ledger.principals.add("officer", ["compliance_officer"])
    _, idle = sessions.sign_in(token)
    ended, _ = sessions.sign_in(token)
    sessions.sign_out(ended)
    clock.now += IDLE_SECONDS + SWEEP_SECONDS
    _, fresh = sessions.sign_in(token)
    assert [r[0] for r in rows(ledger)] == [hashlib.sha256(fresh.encode()).digest()]
    with pytest.raises(AuthenticationError, match=r"^session$"):
        sessions.resume(idle)
    # At most one sweep per interval: a row already expired (made by a worker whose clock
    # is behind) stays until the next sweep.
    behind = Clock()
    behind.now = clock.now - IDLE_SECONDS - 10
    ConsoleSessions(ledger.principals, ledger.store, behind).sign_in(token)
    clock.now += SWEEP_SECONDS - 1
    sessions.sign_in(token)
    assert len(rows(ledger)) == 3
    clock.now += 1
    sessions.sign_in(token)
    assert len(rows(ledger)) == 3  # the old one went, a new one came
    assert min(r[1] for r in rows(ledger)) > clock.now - IDLE_SECONDS
