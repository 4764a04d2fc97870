"""A writer killed with SIGKILL in the middle of a 1,000-event batch never leaves part of it.

Each round starts a separate writer process (``tests/integration/workers.py crash``) that prepares
a 1,000-event batch, announces ``starting`` and appends it in one transaction. The parent kills
it with SIGKILL, alternately

* after a blind random delay (0-300 ms at first; the bound adapts so that kills keep landing both
  before and after the commit), or
* as soon as it sees the writer's transaction open (PostgreSQL: the writer's session holds the
  ``ledger_head`` row lock, or is copying rows into ``entries``; SQLite: the writer holds the
  database's write lock), plus 0-20 ms.

Afterwards the batch must be all present or all absent, an acknowledged batch must be present
where its receipt said, appending must work (part of the same batch again, which replays or
appends as a whole, then one new event) and the log must verify, checkpoints included.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
from sqlalchemy import select

from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from audit_ledger.storage.schema import entries
from tests.conftest import ORIGIN
from tests.support.factories import event

pytestmark = pytest.mark.process
ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 20
BATCH = 1000
RERUN = 20
STEP_TIMEOUT = 60.0

_PG_LOCK_HELD = """
SELECT EXISTS (
    SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
    WHERE l.pid = %s AND l.granted AND c.relname = %s AND l.mode = %s
)
"""


def _batch(rng: random.Random) -> list[dict[str, Any]]:
    """1,000 events of every category; a few new subjects, so the batch also creates data keys."""
    categories = ("financial_transactions", "data_privacy_events", "security_events")
    return [
        event(
            rng.choice(categories),
            user_id=rng.randint(1, 10**9) if rng.random() < 0.01 else rng.randint(1, 40),
        )
        for _ in range(BATCH)
    ]


def _lines(stream: IO[bytes], out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line.decode(errors="replace").strip())


class Writer:
    """One crash-writer child process (started ahead of its round) and the lines it printed."""

    def __init__(self, cfg: dict[str, Any], raws: list[dict[str, Any]], workdir: Path) -> None:
        name = f"writer-{uuid.uuid4().hex[:8]}"
        self.raws = raws
        self.event_ids = [r["event_id"] for r in raws]
        events = workdir / f"{name}.events.json"
        events.write_text(json.dumps(raws))
        config = workdir / f"{name}.json"
        config.write_text(json.dumps({**cfg, "events": str(events)}))
        self.stderr_path = workdir / f"{name}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.workers", "crash", str(config)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        self.reader = threading.Thread(target=_lines, args=(self.proc.stdout, self.lines))
        self.reader.start()

    def expect(self, prefix: str) -> str:
        try:
            line = self.lines.get(timeout=STEP_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"writer printed no {prefix!r} in {STEP_TIMEOUT:.0f}s:\n{self.stderr()}")
        assert line.startswith(prefix), f"expected {prefix!r}, got {line!r}:\n{self.stderr()}"
        return line

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> list[str]:
        """SIGKILL, reap, and return what the writer printed that was not read yet."""
        self.proc.kill()
        code = self.proc.wait(timeout=STEP_TIMEOUT)
        self.close()
        assert code == -signal.SIGKILL, f"writer exited with {code}:\n{self.stderr()}"
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return rest

    def close(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=STEP_TIMEOUT)
        self.reader.join(timeout=STEP_TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]


class TxProbe:
    """Tells whether the writer's append transaction is open right now."""

    def __init__(self, backend: str, database_url: str) -> None:
        self.backend = backend
        if backend == "postgresql":
            self.pg = psycopg.connect(database_url, autocommit=True)
        else:
            self.path = database_url.removeprefix("sqlite:///")

    def close(self) -> None:
        if self.backend == "postgresql":
            self.pg.close()

    def in_tx(self, writer_pid: int, mode: str) -> bool:
        if self.backend == "postgresql":
            relation, lock = (
                ("ledger_head", "RowShareLock")  # head locked FOR UPDATE, nothing written yet
                if mode == "in_tx_head"
                else ("entries", "RowExclusiveLock")  # rows being copied in
            )
            row = self.pg.execute(_PG_LOCK_HELD, (writer_pid, relation, lock)).fetchone()
            return bool(row and row[0])
        # SQLite: only a writer inside BEGIN IMMEDIATE makes another BEGIN IMMEDIATE fail.
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return True
            raise
        else:
            conn.execute("ROLLBACK")
            return False
        finally:
            conn.close()

    def backend_gone(self, writer_pid: int) -> None:
        """Wait until PostgreSQL has ended the killed writer's session (its transaction is then
        resolved for good: a COMMIT already sent still completes, anything else rolls back)."""
        if self.backend != "postgresql":
            return
        deadline = time.monotonic() + STEP_TIMEOUT
        while self.pg.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (writer_pid,)
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "the killed writer's session never ended"
            time.sleep(0.01)


def _present(ledger: Ledger, event_ids: list[str]) -> dict[str, int]:
    with ledger.store.reader() as conn:
        rows = conn.execute(
            select(entries.c.event_id, entries.c.seq).where(entries.c.event_id.in_(event_ids))
        )
        return {r.event_id: r.seq for r in rows}


@pytest.mark.slow
def test_sigkill_mid_batch_leaves_no_partial_batch(
    backend: str,
    settings: Settings,
    ledger: Ledger,
    tmp_path: Path,
    record_property: Any,
) -> None:
    seed = int.from_bytes(os.urandom(8), "big")
    rng = random.Random(seed)
    database_url = settings.database_url
    cfg = {"database_url": database_url, "keys_dir": str(settings.keys_dir), "origin": ORIGIN}
    # A log that is not empty and has a checkpoint the crashes must stay consistent with.
    ledger.appends.append(ledger.appends.prepare_batch([event() for _ in range(7)]), "setup")
    assert ledger.log.checkpoint() is not None
    in_tx_modes = ["in_tx_head", "in_tx_rows"] if backend == "postgresql" else ["in_tx_lock"]

    outcomes: Counter[str] = Counter()
    # Upper bound of the blind delay: starts at 300 ms and adapts (longer after a kill that
    # landed before the commit, shorter after one that landed after it), so the kills keep
    # straddling the commit point however fast this machine appends.
    ceiling = 0.3
    probe = TxProbe(backend, database_url)
    writers: list[Writer] = []
    try:
        # Each round's writer is started while the previous round is checked (start-up overlaps
        # the checks, not the append being killed).
        writers.append(Writer(cfg, _batch(rng), tmp_path))
        for round_ in range(ROUNDS):
            writer = writers[-1]
            # Alternate: a blind random delay, or a kill while the transaction is seen open.
            mode = "timed" if round_ % 2 == 0 else rng.choice(in_tx_modes)
            state = f"round {round_} {mode} (seed {seed})"
            size_before = ledger.log.size()

            writer_pid = int(writer.expect("ready").split()[1])
            writer.go()
            writer.expect("starting")
            if mode == "timed":
                time.sleep(rng.uniform(0.0, ceiling))
            else:
                deadline = time.monotonic() + STEP_TIMEOUT
                while not probe.in_tx(writer_pid, mode) and writer.lines.empty():
                    assert writer.alive(), f"writer died:\n{writer.stderr()}"
                    assert time.monotonic() < deadline, f"never saw the transaction {state}"
                    time.sleep(0.001)
                time.sleep(rng.uniform(0.0, 0.02))
            printed = writer.kill()
            if round_ + 1 < ROUNDS:
                writers.append(Writer(cfg, _batch(rng), tmp_path))
            probe.backend_gone(writer_pid)

            present = _present(ledger, writer.event_ids)
            assert len(present) in {0, BATCH}, f"partial batch: {len(present)} of {BATCH} {state}"
            size = ledger.log.size()
            if present:
                outcomes[f"after_commit_{mode}"] += 1
                if mode == "timed":
                    ceiling *= 0.8
                assert size == size_before + BATCH, state
                assert [present[e] for e in writer.event_ids] == list(
                    range(size_before, size_before + BATCH)
                ), state
            else:
                outcomes[f"before_commit_{mode}"] += 1
                if mode == "timed":
                    ceiling = min(ceiling * 1.5, 5.0)
                assert size == size_before, state
            acknowledged = [line.split() for line in printed if line.startswith("committed")]
            if acknowledged:
                # An acknowledged append survives the crash, at the place its receipt named.
                _, first_seq, last_leaf = acknowledged[0]
                assert present, f"acknowledged batch lost {state}"
                assert int(first_seq) == size_before, state
                last = ledger.store.entry(size - 1)
                assert last is not None, state
                assert last.leaf_hash.hex() == last_leaf, state

            # Appending works afterwards: rerunning (part of) the batch is safe either way, and
            # a new event lands right after.
            rerun = ledger.appends.append(
                ledger.appends.prepare_batch(writer.raws[:RERUN]), "crash-rerun"
            )
            assert [r.seq for r in rerun] == list(range(size_before, size_before + RERUN)), state
            assert {r.replayed for r in rerun} == {bool(present)}, state
            size = size_before + (BATCH if present else RERUN)
            (one,) = ledger.appends.append(ledger.appends.prepare_batch([event()]), "after-crash")
            assert (one.seq, one.replayed) == (size, False), state
            assert ledger.log.checkpoint() is not None
            report = ledger.verification.run()
            assert report.ok, f"{report.problem} {state}"
            assert report.size == size + 1, state
    finally:
        for writer in writers:
            writer.close()
        probe.close()

    before = sum(n for key, n in outcomes.items() if key.startswith("before_commit"))
    after = sum(n for key, n in outcomes.items() if key.startswith("after_commit"))
    record_property("kill_outcomes", dict(outcomes))
    print(f"\n{backend}: {before} kills before commit, {after} after commit: {dict(outcomes)}")
    assert before + after == ROUNDS
    assert before >= 1, f"no kill landed while the batch was uncommitted: {dict(outcomes)}"
