"""Bookkeeping for scheduled jobs: a leader lock per job and the last completed tick.

PostgreSQL: ``pg_try_advisory_xact_lock`` — transaction-scoped, so a crashed leader can never
leave a stale lock, and any number of replicas on one database run each job once per tick.
SQLite (one host): an exclusive ``flock`` on a file beside the database does the same for the
processes of that host.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select, text

from audit_ledger.storage.database import translate_errors
from audit_ledger.storage.schema import job_runs
from audit_ledger.storage.store import Store


def _lock_key(job: str) -> int:
    digest = hashlib.sha256(b"audit-ledger/job/" + job.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def job_lock(store: Store, job: str) -> Iterator[bool]:
    """Yield True while this process leads ``job``; False if another process does."""
    if store.dialect == "postgresql":
        with translate_errors(), store.engine.connect() as conn, conn.begin():
            acquired = bool(
                conn.execute(
                    text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _lock_key(job)}
                ).scalar_one()
            )
            yield acquired
        return
    database = store.engine.url.database or "audit-ledger"
    path = Path(f"{database}.{job}.lock")
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def last_tick(store: Store, job: str) -> int | None:
    with store.reader() as conn:
        row = conn.execute(select(job_runs.c.last_tick).where(job_runs.c.job == job)).first()
        return int(row[0]) if row else None


def record_run(store: Store, job: str, tick: int, when: str, outcome: str) -> None:
    with store.writer() as tx:
        # One upsert (both backends have ON CONFLICT … excluded): an UPDATE-then-INSERT lost
        # the race when two processes recorded the same job's first run at once (two first
        # readers of /v1/log/checkpoint signing it on demand).
        tx.conn.execute(
            text(
                "INSERT INTO job_runs (job, last_tick, last_run_at, last_outcome) "
                "VALUES (:job, :tick, :when, :outcome) ON CONFLICT (job) DO UPDATE SET "
                "last_tick = excluded.last_tick, last_run_at = excluded.last_run_at, "
                "last_outcome = excluded.last_outcome"
            ),
            {"job": job, "tick": tick, "when": when, "outcome": outcome},
        )


def runs(store: Store) -> dict[str, tuple[int, str, str]]:
    """``job -> (last tick, last run time, outcome)`` for every job that ever ran."""
    with store.reader() as conn:
        return {
            r.job: (int(r.last_tick), r.last_run_at, r.last_outcome)
            for r in conn.execute(select(job_runs))
        }
