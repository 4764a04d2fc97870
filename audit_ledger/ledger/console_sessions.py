"""Console sessions: a principal's token exchanged for a server-side, expiring session (DESIGN §8).

The cookie holds only a random session id (256 bits from :func:`secrets.token_urlsafe`); the
``console_sessions`` table (:mod:`audit_ledger.storage.console_sessions`) keeps its SHA-256,
the principal's name, the hash of the token it signed in with (the digest the principals table
stores — never the token) and three times. Every request looks the row up on the primary, so
every worker of ``serve --workers N`` (and every replica on the same database) sees the same
state: signing out sets ``ended_at`` and a copied cookie is refused everywhere at once.

On every request the token hash is checked again as a bearer token is (the principal row
against the chain entry that binds it, :meth:`Principals.by_token_hash`, uncached), so revoking
the principal, rotating its token or tampering with its row ends its sessions at the next
request, and the roles used are the principal's current ones, not those at sign-in. Sessions
idle for :data:`IDLE_SECONDS` or older than :data:`MAX_SECONDS` are refused. ``seen_at`` is
written at most every :data:`TOUCH_SECONDS` (not once per request), so the idle timeout is
exact to within that. Expired rows are deleted on sign-in, at most once per
:data:`SWEEP_SECONDS` per process: rows only accumulate through sign-ins, so that bounds the
table without a job of its own.

CSRF (OWASP synchronizer token): the form token is an HMAC-SHA-256 keyed by the session id of
a fixed label. The id is a 256-bit secret only the browser holds, so the token is bound to one
session, unguessable without the cookie, and does not reveal the id; it is checked in constant
time on every POST. No key file is needed for it. Before sign-in there is no session: the
sign-in form pairs a random value in a cookie with the same value in the form (double submit),
and the cookie is ``SameSite=Strict``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from audit_ledger.errors import AuthenticationError, PermissionDeniedError
from audit_ledger.ledger.identity import Principal, token_hash
from audit_ledger.ledger.principals import Principals
from audit_ledger.storage.console_sessions import StoredSession

#: A session unused this long is over (seconds).
IDLE_SECONDS = 15 * 60
#: No session outlives this, used or not (seconds).
MAX_SECONDS = 12 * 3600
#: ``seen_at`` is moved forward at most this often (seconds): not a write per request.
TOUCH_SECONDS = 30
#: Expired rows are swept on sign-in at most this often per process (seconds).
SWEEP_SECONDS = 60
#: 32 random bytes, base64url without padding (43 characters).
_SID = re.compile(r"[A-Za-z0-9_-]{43}")
_CSRF_LABEL = b"audit-ledger console csrf v1"


class SessionStore(Protocol):
    def insert_console_session(
        self, sid_hash: bytes, principal: str, token_hash: bytes, now: int
    ) -> None: ...

    def console_session(self, sid_hash: bytes) -> StoredSession | None: ...

    def touch_console_session(self, sid_hash: bytes, now: int) -> None: ...

    def end_console_session(self, sid_hash: bytes, now: int) -> None: ...

    def sweep_console_sessions(self, seen_before: int, issued_before: int) -> int: ...


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in console user."""

    principal: Principal
    sid: str
    issued_at: int
    seen_at: int


def _sid_hash(sid: str) -> bytes:
    return hashlib.sha256(sid.encode("ascii")).digest()


class ConsoleSessions:
    """Sign in, resume, sign out; CSRF tokens bound to a session."""

    def __init__(
        self,
        principals: Principals,
        store: SessionStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.principals = principals
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def sign_in(self, token: str) -> tuple[Session, str]:
        """Exchange a bearer token for a stored session and its cookie value (the session id).

        :class:`AuthenticationError` (reason code only) for a token that is not a principal's.
        """
        principal = self.principals.authenticate(token)
        now = int(self.clock())
        self._sweep(now)
        sid = secrets.token_urlsafe(32)
        self.store.insert_console_session(_sid_hash(sid), principal.name, token_hash(token), now)
        return Session(principal, sid, now, now), sid

    def resume(self, cookie: str) -> Session:
        """The session behind ``cookie``, re-checked against the principals table."""
        if not _SID.fullmatch(cookie):
            raise AuthenticationError("session")
        digest = _sid_hash(cookie)
        row = self.store.console_session(digest)
        if row is None:
            raise AuthenticationError("session")  # never issued, or swept after it expired
        now = int(self.clock())
        if row.ended_at is not None:
            raise AuthenticationError("session_ended")
        if now - row.seen_at > IDLE_SECONDS or now - row.issued_at > MAX_SECONDS:
            raise AuthenticationError("session_expired")
        if now < row.issued_at:
            raise AuthenticationError("session")  # a clock gone backwards: trust nothing
        # Checked against the chain like a bearer token (revoked, rotated away, tampered).
        principal = self.principals.by_token_hash(row.token_hash)
        if principal.name != row.principal:
            raise AuthenticationError("unknown")
        seen = row.seen_at
        if now - seen >= TOUCH_SECONDS:
            self.store.touch_console_session(digest, now)
            seen = now
        return Session(principal, cookie, row.issued_at, seen)

    def sign_out(self, session: Session) -> None:
        """End the session for every worker (the row stays, refused, until it is swept)."""
        self.store.end_console_session(_sid_hash(session.sid), int(self.clock()))

    def csrf_token(self, session: Session) -> str:
        return hmac.new(session.sid.encode("ascii"), _CSRF_LABEL, hashlib.sha256).hexdigest()

    def check_csrf(self, session: Session, submitted: str | None) -> None:
        """:class:`PermissionDeniedError` unless ``submitted`` is this session's CSRF token."""
        # Bytes, not str: compare_digest refuses non-ASCII text (a 500 for a crafted form).
        expected = self.csrf_token(session).encode("ascii")
        if not submitted or not hmac.compare_digest(expected, submitted.encode("utf-8")):
            raise PermissionDeniedError("the form's CSRF token is missing or wrong")

    def _sweep(self, now: int) -> None:
        with self._lock:
            if now < self._next_sweep:
                return
            self._next_sweep = now + SWEEP_SECONDS
        self.store.sweep_console_sessions(now - IDLE_SECONDS, now - MAX_SECONDS)
