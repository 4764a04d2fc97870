"""The witness's state in its own SQLite file (stdlib ``sqlite3``; not the ledger's schema).

Tables:

* ``logs(origin, vkey)``: the logs the witness trusts — one row per Ed25519 verifier key, a log
  (identified by its origin line, tlog-witness) may have several (a key rotation);
* ``checkpoints(origin, size, root_hash, note, updated_at)``: the latest checkpoint cosigned per
  origin — all tlog-witness asks a witness to remember;
* ``refusals(...)``: correctly signed checkpoints that were refused (tlog-witness: the witness
  "MAY log the request ... as it might be proof of log misbehavior"), kept as evidence.

Durability: WAL with ``synchronous=FULL``, so a committed update is on disk before the
cosignature is returned (tlog-witness: "The witness MUST persist the new checkpoint before
responding"). Check-and-update is one ``BEGIN IMMEDIATE`` transaction under a process lock: the
compare-and-swap the spec asks for (no request can roll the stored size back).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from audit_ledger.core.checkpoint import Verifier, parse_verifier_key
from audit_ledger.errors import ConfigError

STATE_FILE = "witness.sqlite3"

_SCHEMA = (
    (
        "CREATE TABLE IF NOT EXISTS logs (origin TEXT NOT NULL, vkey TEXT NOT NULL, "
        "added_at TEXT NOT NULL, PRIMARY KEY (origin, vkey))"
    ),
    (
        "CREATE TABLE IF NOT EXISTS checkpoints (origin TEXT PRIMARY KEY, size INTEGER NOT NULL, "
        "root_hash BLOB NOT NULL, note TEXT NOT NULL, updated_at TEXT NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS refusals (id INTEGER PRIMARY KEY, origin TEXT NOT NULL, "
        "received_at TEXT NOT NULL, reason TEXT NOT NULL, old_size INTEGER NOT NULL, "
        "size INTEGER NOT NULL, note TEXT NOT NULL)"
    ),
)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True, slots=True)
class Latest:
    """The latest checkpoint the witness cosigned for one origin."""

    size: int
    root_hash: bytes


class StateTx:
    """Reads and the compare-and-swap write inside one :meth:`WitnessState.transaction`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def log_keys(self, origin: str) -> list[Verifier]:
        rows = self.conn.execute("SELECT vkey FROM logs WHERE origin = ?", (origin,)).fetchall()
        return [parse_verifier_key(row[0]) for row in rows]

    def latest(self, origin: str) -> Latest | None:
        row = self.conn.execute(
            "SELECT size, root_hash FROM checkpoints WHERE origin = ?", (origin,)
        ).fetchone()
        return Latest(int(row[0]), bytes(row[1])) if row else None

    def store(self, origin: str, size: int, root_hash: bytes, note: str) -> None:
        self.conn.execute(
            "INSERT INTO checkpoints (origin, size, root_hash, note, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET size = excluded.size, "
            "root_hash = excluded.root_hash, note = excluded.note, "
            "updated_at = excluded.updated_at",
            (origin, size, root_hash, note, _now()),
        )


class WitnessState:
    """The witness's SQLite file: trusted logs and the latest cosigned checkpoint per origin."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE) below.
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                self._conn.execute(statement)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the witness state {path}: {exc}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[StateTx]:
        """One write transaction, committed when the block ends without an exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield StateTx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def add_log(self, vkey: str, origin: str | None = None) -> tuple[str, Verifier]:
        """Trust ``vkey`` (an Ed25519 note verifier key) for ``origin`` (default: its name)."""
        verifier = parse_verifier_key(vkey)
        origin = origin or verifier.name
        with self.transaction() as tx:
            tx.conn.execute(
                "INSERT OR IGNORE INTO logs (origin, vkey, added_at) VALUES (?, ?, ?)",
                (origin, verifier.encode(), _now()),
            )
        return origin, verifier

    def logs(self) -> list[tuple[str, str]]:
        with self._lock:
            rows = self._conn.execute("SELECT origin, vkey FROM logs ORDER BY origin, vkey")
            return [(str(o), str(k)) for o, k in rows]

    def latest(self, origin: str) -> Latest | None:
        with self._lock:
            return StateTx(self._conn).latest(origin)

    def record_refusal(self, origin: str, reason: str, old_size: int, size: int, note: str) -> None:
        with self.transaction() as tx:
            tx.conn.execute(
                "INSERT INTO refusals (origin, received_at, reason, old_size, size, note) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (origin, _now(), reason, old_size, size, note),
            )

    def refusals(self, origin: str) -> list[tuple[str, int, int]]:
        """``(reason, old size, size)`` of each refused, correctly signed checkpoint."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT reason, old_size, size FROM refusals WHERE origin = ? ORDER BY id",
                (origin,),
            )
            return [(str(r), int(o), int(s)) for r, o, s in rows]
