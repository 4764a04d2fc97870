"""The console's server-side sessions as stored (``console_sessions``, migration 0005).

A row is keyed by the SHA-256 of the cookie's random session id (never the id itself, so a
database reader cannot resume a session) and names the principal and the token hash it signed in
with. Each statement is its own short transaction on the primary: sessions are bookkeeping, not
ledger evidence, so they never take the head lock that appends wait on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, or_, select, update

from audit_ledger.storage.database import Database, as_bytes, translate_errors
from audit_ledger.storage.schema import console_sessions


@dataclass(frozen=True, slots=True)
class StoredSession:
    principal: str
    token_hash: bytes
    issued_at: int
    seen_at: int
    ended_at: int | None


class ConsoleSessionRows(Database):
    """Insert, look up, touch, end and sweep console sessions."""

    @contextmanager
    def _session_write(self) -> Iterator[Connection]:
        with translate_errors(), self.engine.connect() as conn, conn.begin():
            yield conn

    def insert_console_session(
        self, sid_hash: bytes, principal: str, token_hash: bytes, now: int
    ) -> None:
        with self._session_write() as conn:
            conn.execute(
                insert(console_sessions).values(
                    sid_hash=sid_hash,
                    principal=principal,
                    token_hash=token_hash,
                    issued_at=now,
                    seen_at=now,
                    ended_at=None,
                )
            )

    def console_session(self, sid_hash: bytes) -> StoredSession | None:
        t = console_sessions.c
        with self.reader() as conn:
            row = conn.execute(
                select(t.principal, t.token_hash, t.issued_at, t.seen_at, t.ended_at).where(
                    t.sid_hash == sid_hash
                )
            ).first()
        if row is None:
            return None
        ended = None if row.ended_at is None else int(row.ended_at)
        return StoredSession(
            row.principal, as_bytes(row.token_hash), int(row.issued_at), int(row.seen_at), ended
        )

    def touch_console_session(self, sid_hash: bytes, now: int) -> None:
        """Move ``seen_at`` forward (never back: two workers may touch at once)."""
        t = console_sessions.c
        with self._session_write() as conn:
            conn.execute(
                update(console_sessions)
                .where(t.sid_hash == sid_hash, t.ended_at.is_(None), t.seen_at < now)
                .values(seen_at=now)
            )

    def end_console_session(self, sid_hash: bytes, now: int) -> None:
        t = console_sessions.c
        with self._session_write() as conn:
            conn.execute(
                update(console_sessions)
                .where(t.sid_hash == sid_hash, t.ended_at.is_(None))
                .values(ended_at=now)
            )

    def sweep_console_sessions(self, seen_before: int, issued_before: int) -> int:
        """Delete sessions idle since before ``seen_before`` or issued before
        ``issued_before`` (ended ones included: they are refused until then anyway); how many."""
        t = console_sessions.c
        with self._session_write() as conn:
            result = conn.execute(
                delete(console_sessions).where(
                    or_(t.seen_at < seen_before, t.issued_at < issued_before)
                )
            )
            return int(result.rowcount)
