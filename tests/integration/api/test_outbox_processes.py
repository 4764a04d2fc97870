"""The bot's outbox against real processes: a real ``audit-ledger serve`` that is killed and
restarted while a bot process appends, and a bot process SIGKILLed between the ledger's commit
and the deletion of the acknowledged rows. Every event must land exactly once, in order.

The bot is :mod:`tests.integration.outbox_bot` (the client and the outbox, nothing else); the
result is read from the ledger's own leaves after the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from audit_ledger.client import derive_event_id
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.integration.api.conftest import LiveServer, make_server
from tests.support.polling import wait_until
from tests.support.processes import ROOT

pytestmark = pytest.mark.process


class Bot:
    """One ``outbox_bot`` process; its stdout lines are collected by a reader thread."""

    def __init__(self, tmp_path: Path, name: str, config: dict[str, object]) -> None:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(config))
        self.stderr_path = tmp_path / f"{name}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.outbox_bot", str(path)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.lines: list[str] = []
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.strip())

    def saw(self, prefix: str) -> bool:
        return any(line.startswith(prefix) for line in self.lines)

    def enqueued(self) -> int:
        return sum(line.startswith("enqueued ") for line in self.lines)

    def wait(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.wait()


def bot_config(
    server: LiveServer, outbox: Path, start: int, end: int, **extra: object
) -> dict[str, object]:
    return {
        "url": server.url,
        "token": server.tokens["writer"],
        "outbox": str(outbox),
        "start": start,
        "end": end,
        "batch_size": 10,
        **extra,
    }


def payment_ids_in_log(settings: Settings) -> list[str]:
    """The event_ids of every payment_completed entry, in log order (read from the leaves)."""
    ledger = Ledger.open(settings)
    try:
        size = ledger.log.size()
        ids: list[str] = []
        for start in range(0, size, 1000):
            for _, leaf in ledger.log.leaves(start, size):
                header = json.loads(leaf)
                if header["event_type"] == "payment_completed":
                    ids.append(header["event_id"])
        assert ledger.verification.run().ok
        return ids
    finally:
        ledger.close()


def expected_ids(n: int) -> list[str]:
    return [derive_event_id("payment_completed", f"INV-{i:06d}") for i in range(n)]


def test_ledger_killed_and_restarted_while_the_bot_appends(
    settings: Settings, tmp_path: Path
) -> None:
    """The ledger dies (SIGKILL) and comes back while the bot keeps logging: events queue on
    disk meanwhile and then all land, once each, in the order they were logged."""
    n = 150
    server = make_server(settings, tmp_path)
    server.start()
    bot = Bot(
        tmp_path, "bot", bot_config(server, tmp_path / "outbox.sqlite3", 0, n, enqueue_delay=0.01)
    )
    try:
        wait_until(lambda: bot.enqueued() >= 40, timeout=60, message="bot did not start logging")
        server.stop(signal.SIGKILL)
        down_at = bot.enqueued()
        # The bot goes on logging while the ledger is down: durably, into its outbox.
        wait_until(lambda: bot.enqueued() >= down_at + 40, timeout=60, message="bot stalled")
        server.start()
        assert bot.wait() == 0, bot.stderr_path.read_text()[-3000:]
    finally:
        bot.kill()
        server.stop()
    assert bot.lines[-1] == "done 0 0"
    # It did notice the outage (and said so), and it lost nothing.
    assert "flush stopped, events kept on disk" in bot.stderr_path.read_text()
    assert payment_ids_in_log(settings) == expected_ids(n)


def test_bot_killed_between_commit_and_acknowledgement(settings: Settings, tmp_path: Path) -> None:
    """SIGKILL the bot after the ledger committed a batch but before the outbox deleted it; the
    restarted bot (the same payments redelivered, as Telegram would) sends the rest and the
    unacknowledged batch again: the ledger replays it, nothing is doubled or lost."""
    n = 60
    outbox = tmp_path / "outbox.sqlite3"
    server = make_server(settings, tmp_path)
    server.start()
    try:
        first = Bot(
            tmp_path,
            "first",
            bot_config(server, outbox, 0, n, hang_after_batches=2, flush_after_enqueue=True),
        )
        try:
            wait_until(lambda: first.saw("receipt 2"), timeout=60, message="no second receipt")
        finally:
            first.kill()
        # Committed by the ledger but still queued: the kill came before the deletion.
        committed = payment_ids_in_log(settings)
        assert committed == expected_ids(n)[:20]  # two full batches of 10
        with contextlib.closing(sqlite3.connect(outbox)) as db:
            queued = [row[0] for row in db.execute("SELECT event_id FROM outbox ORDER BY id")]
        # The first batch was acknowledged and removed; the second was committed but is still
        # queued, with everything after it.
        assert queued == expected_ids(n)[10:]

        second = Bot(tmp_path, "second", bot_config(server, outbox, 0, n))
        assert second.wait() == 0, second.stderr_path.read_text()[-3000:]
        assert second.lines[-1] == "done 0 0"
    finally:
        server.stop()
    assert payment_ids_in_log(settings) == expected_ids(n)


def test_two_bot_processes_share_one_outbox(settings: Settings, tmp_path: Path) -> None:
    """Two bot processes on one outbox file, both receiving an overlapping range of payments
    (two replicas behind one webhook): they enqueue into the same file and take turns
    flushing it; each payment lands once."""
    outbox = tmp_path / "outbox.sqlite3"
    server = make_server(settings, tmp_path)
    server.start()
    try:
        bots = [
            Bot(tmp_path, "a", bot_config(server, outbox, 0, 80, enqueue_delay=0.002)),
            Bot(tmp_path, "b", bot_config(server, outbox, 40, 120, enqueue_delay=0.002)),
        ]
        for bot in bots:
            assert bot.wait() == 0, bot.stderr_path.read_text()[-3000:]
            assert bot.lines[-1] == "done 0 0"
    finally:
        for bot in bots:
            bot.kill()
        server.stop()
    logged = payment_ids_in_log(settings)
    assert sorted(logged) == sorted(expected_ids(120))
    # Each bot's own payments went out in the order it logged them.
    position = {event_id: n for n, event_id in enumerate(logged)}
    for start, end in ((0, 40), (80, 120)):
        ours = [position[e] for e in expected_ids(end)[start:]]
        assert ours == sorted(ours)


OPEN_AND_ENQUEUE = """
import sys
from pathlib import Path
from audit_ledger.client import Outbox
outbox_path, ready, go, event_id = sys.argv[1:]
Path(ready).touch()
while not Path(go).exists():
    pass  # spin, not sleep: every process reaches the open in the same instant
outbox = Outbox(outbox_path)
outbox.enqueue({"event_id": event_id, "category": "security_events",
                "event_type": "login_failed", "occurred_at": "2026-12-01T00:00:00Z",
                "data": {"user_id": 1, "outcome": "denied"}})
"""


def test_processes_opening_a_new_outbox_together_all_start(tmp_path: Path) -> None:
    """Bot replicas started together on a file that does not exist yet: each opens it and each
    enqueue lands. Only one can switch the file to WAL; SQLite answers the others "database is
    locked" at once, without its busy handler (two shared locks each waiting to upgrade), so
    before the retry most of these processes died at the open."""
    for round_ in range(8):
        outbox, go = tmp_path / f"outbox{round_}.sqlite3", tmp_path / f"go{round_}"
        ids = [f"00000000-0000-4000-8000-{round_:06d}{n:06d}" for n in range(12)]
        ready = [tmp_path / f"ready{round_}-{n}" for n in range(len(ids))]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_AND_ENQUEUE, str(outbox), str(r), str(go), event_id],
                cwd=ROOT,
                stderr=subprocess.PIPE,
            )
            for r, event_id in zip(ready, ids, strict=True)
        ]
        try:
            wait_until(lambda ready=ready: all(r.exists() for r in ready), timeout=120)
            go.touch()
            for proc in procs:
                _, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, err.decode()[-2000:]
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        with contextlib.closing(sqlite3.connect(outbox)) as db:
            assert sorted(r[0] for r in db.execute("SELECT event_id FROM outbox")) == ids
