"""Console sessions (issue #14): idle and absolute expiry, CSRF bound to one session, a sealed
cookie that cannot be forged or altered, and a token rotation or revocation ending sessions.

On both backends, through the real principals table (the re-check on every request is the
point); only the clock is the test's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from audit_ledger.crypto.session_seal import SESSION_KEY_FILE, load_session_key
from audit_ledger.errors import AuthenticationError, PermissionDeniedError
from audit_ledger.ledger.console_sessions import IDLE_SECONDS, MAX_SECONDS, ConsoleSessions
from audit_ledger.ledger.service import Ledger


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
    return ConsoleSessions(ledger.principals, ledger.store, ledger.settings.keys_dir, clock)


def test_a_session_resumes_with_the_principals_current_roles(
    ledger: Ledger, sessions: ConsoleSessions
) -> None:
    token = ledger.principals.add("officer", ["compliance_officer"])
    session, cookie = sessions.sign_in(token)
    assert token not in cookie
    resumed, refreshed = sessions.resume(cookie)
    assert resumed.principal == session.principal
    assert resumed.sid == session.sid
    assert refreshed != cookie  # re-sealed (fresh nonce, new "last seen")


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
        _, cookie = sessions.resume(cookie)
    clock.now = start + MAX_SECONDS + 1
    with pytest.raises(AuthenticationError, match="session_expired"):
        sessions.resume(cookie)


def test_a_cookie_from_another_key_or_altered_is_refused(
    ledger: Ledger, sessions: ConsoleSessions, tmp_path: Path
) -> None:
    token = ledger.principals.add("officer", ["compliance_officer"])
    _, cookie = sessions.sign_in(token)
    other = ConsoleSessions(ledger.principals, ledger.store, tmp_path)
    for forged in (cookie[:-1] + ("A" if cookie[-1] != "A" else "B"), "", "x" * 80, "%%%"):
        with pytest.raises(AuthenticationError, match="session"):
            sessions.resume(forged)
    with pytest.raises(AuthenticationError, match="session"):
        other.resume(cookie)


def test_revocation_ends_sessions_at_once(ledger: Ledger, sessions: ConsoleSessions) -> None:
    token = ledger.principals.add("officer", ["compliance_officer"])
    _, cookie = sessions.sign_in(token)
    ledger.principals.revoke("officer")
    with pytest.raises(AuthenticationError, match="revoked"):
        sessions.resume(cookie)


def test_csrf_tokens_are_bound_to_one_session(ledger: Ledger, sessions: ConsoleSessions) -> None:
    token = ledger.principals.add("officer", ["compliance_officer"])
    first, _ = sessions.sign_in(token)
    second, _ = sessions.sign_in(token)
    sessions.check_csrf(first, sessions.csrf_token(first))
    for wrong in (None, "", sessions.csrf_token(second)):
        with pytest.raises(PermissionDeniedError):
            sessions.check_csrf(first, wrong)


def test_sign_out_ends_the_session_but_not_the_principals_others(
    ledger: Ledger, sessions: ConsoleSessions
) -> None:
    token = ledger.principals.add("officer", ["compliance_officer"])
    first, first_cookie = sessions.sign_in(token)
    _, second_cookie = sessions.sign_in(token)
    sessions.sign_out(first)
    with pytest.raises(AuthenticationError, match="session_ended"):
        sessions.resume(first_cookie)
    sessions.resume(second_cookie)


def test_the_session_key_is_made_once_and_shared(tmp_path: Path) -> None:
    first = load_session_key(tmp_path)
    second = load_session_key(tmp_path)
    assert not first.ephemeral
    assert first.secret == second.secret
    assert (tmp_path / SESSION_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [SESSION_KEY_FILE]


def test_an_unwritable_keys_dir_gives_a_per_process_key(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    key = load_session_key(missing)
    assert key.ephemeral
    assert key.secret.hex() not in repr(key)
