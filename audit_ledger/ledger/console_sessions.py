"""Console sessions: a principal's token exchanged for a sealed, expiring session (DESIGN §8).

Choice (issue #14): the session is a *sealed cookie*, not a server-side table. It carries the
principal's name, a reference to its token (the token's SHA-256, the same digest the principals
table stores — never the token), a random session id and two times; AES-256-GCM seals it
(:mod:`audit_ledger.crypto.session_seal`). On every request the reference is looked up again,
so revoking the principal or rotating its token ends its sessions at the next request, and the
roles used are the principal's current ones, not those at sign-in. Sessions idle for
:data:`IDLE_SECONDS` or older than :data:`MAX_SECONDS` are refused; each request re-seals the
cookie with a fresh "last seen" (a sliding idle timeout).

Sign-out clears the cookie and remembers the session id as ended until the session could not
be valid anyway. That memory is per process: with several workers a *copied* cookie replayed
after sign-out stays usable on the other workers until its idle timeout (at most
:data:`IDLE_SECONDS`). A sessions table would close that gap; it is left for a later migration.

CSRF (OWASP synchronizer token): the form token is an HMAC of the session id under the session
key, so it is bound to one session and checked in constant time on every POST. Before sign-in
there is no session: the sign-in form pairs a random value in a cookie with the same value in
the form (double submit), and the cookie is ``SameSite=Strict``.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson

from audit_ledger.crypto.session_seal import SessionKey, load_session_key
from audit_ledger.errors import AuthenticationError, PermissionDeniedError
from audit_ledger.ledger.identity import Principal, token_hash
from audit_ledger.ledger.principals import Principals
from audit_ledger.storage.principals import StoredPrincipal

#: A session unused this long is over (seconds).
IDLE_SECONDS = 15 * 60
#: No session outlives this, used or not (seconds).
MAX_SECONDS = 12 * 3600
_PURPOSE = b"audit-ledger console session v1"


class PrincipalLookup(Protocol):
    def principal_by_token_hash(self, token_hash: bytes) -> StoredPrincipal | None: ...


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in console user."""

    principal: Principal
    sid: str
    issued_at: int
    seen_at: int


class ConsoleSessions:
    """Sign in, resume, sign out; CSRF tokens bound to a session."""

    def __init__(
        self,
        principals: Principals,
        lookup: PrincipalLookup,
        keys_dir: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.principals = principals
        self.lookup = lookup
        self.keys_dir = keys_dir
        self.clock = clock
        self._key: SessionKey | None = None
        self._lock = threading.Lock()
        self._ended: dict[str, float] = {}

    @property
    def key(self) -> SessionKey:
        # Loaded on first use: a CLI command that never serves the console creates no key file.
        with self._lock:
            if self._key is None:
                self._key = load_session_key(self.keys_dir)
            return self._key

    def sign_in(self, token: str) -> tuple[Session, str]:
        """Exchange a bearer token for a session and its sealed cookie value.

        :class:`AuthenticationError` (reason code only) for a token that is not a principal's.
        """
        principal = self.principals.authenticate(token)
        now = int(self.clock())
        session = Session(principal, secrets.token_urlsafe(16), now, now)
        return session, self._seal(session, token_hash(token).hex())

    def resume(self, cookie: str) -> tuple[Session, str]:
        """The session behind ``cookie``, re-checked against the principals table, and the
        cookie value to send back (its idle timer restarted)."""
        raw = self.key.unseal(cookie, _PURPOSE)
        if raw is None:
            raise AuthenticationError("session")
        try:
            claim = orjson.loads(raw)
            name, ref, sid = str(claim["n"]), str(claim["h"]), str(claim["s"])
            issued, seen = int(claim["i"]), int(claim["t"])
            digest = bytes.fromhex(ref)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise AuthenticationError("session") from None
        now = int(self.clock())
        if now - seen > IDLE_SECONDS or now - issued > MAX_SECONDS or now < issued:
            raise AuthenticationError("session_expired")
        if self._is_ended(sid, now):
            raise AuthenticationError("session_ended")
        stored = self.lookup.principal_by_token_hash(digest)
        if stored is None or stored.name != name:
            raise AuthenticationError("unknown")  # the token was rotated or never existed
        if stored.revoked_at is not None:
            raise AuthenticationError("revoked")
        session = Session(Principal(stored.name, frozenset(stored.roles)), sid, issued, now)
        return session, self._seal(session, ref)

    def sign_out(self, session: Session) -> None:
        with self._lock:
            now = self.clock()
            self._ended = {s: t for s, t in self._ended.items() if t > now}
            self._ended[session.sid] = session.issued_at + MAX_SECONDS

    def csrf_token(self, session: Session) -> str:
        return self.key.mac(b"csrf", session.sid.encode("ascii"))

    def check_csrf(self, session: Session, submitted: str | None) -> None:
        """:class:`PermissionDeniedError` unless ``submitted`` is this session's CSRF token."""
        if not submitted or not hmac.compare_digest(self.csrf_token(session), submitted):
            raise PermissionDeniedError("the form's CSRF token is missing or wrong")

    def _is_ended(self, sid: str, now: float) -> bool:
        with self._lock:
            until = self._ended.get(sid)
            return until is not None and until > now

    def _seal(self, session: Session, ref: str) -> str:
        claim = {
            "n": session.principal.name,
            "h": ref,
            "s": session.sid,
            "i": session.issued_at,
            "t": session.seen_at,
        }
        return self.key.seal(orjson.dumps(claim), _PURPOSE)
