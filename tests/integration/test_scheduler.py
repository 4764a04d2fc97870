"""Scheduled jobs: one run per tick across replicas, catch-up, a real APScheduler, tamper alarms.

* Three scheduler replicas — three OS processes, each with its own :class:`Ledger` and a
  simulated clock — drive the daily retention job through a simulated week on one PostgreSQL
  database, hour by hour and in lock-step; every daily tick runs exactly once, and a service that
  was down for three days catches up with one run, not three.
* A real background APScheduler signs checkpoints every second while the log grows.
* A payload row deleted by a superuser (guard trigger out of the way) is reported by ``verify``
  and by the verify job as tampering at that seq, also after a retention run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy import text

from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.ledger.reads import Query
from audit_ledger.ledger.service import Ledger
from audit_ledger.scheduler import BUSY, DONE, RAN, Job, default_jobs, run_job, start_background
from audit_ledger.settings import Settings, load_settings
from audit_ledger.storage import jobs
from tests.conftest import ORIGIN
from tests.support.factories import event

DAY = 86_400
#: A scheduler replica: reads one simulated instant per line, runs the retention job at it with
#: its ledger's clock set to it, and answers with the outcome.
REPLICA = """
import json, sys
from audit_ledger.core.timestamps import parse_timestamp
from audit_ledger.ledger.service import Ledger
from audit_ledger.scheduler import default_jobs, run_job
from audit_ledger.settings import load_settings

cfg = json.loads(sys.argv[1])
now = [parse_timestamp(cfg["start"])]
ledger = Ledger.open(load_settings(**cfg["settings"]), clock=lambda: now[0])
job = next(j for j in default_jobs(ledger) if j.name == "retention")
print("ready", flush=True)
for line in sys.stdin:
    now[0] = parse_timestamp(line.strip())
    print(run_job(ledger, job, now[0]), flush=True)
ledger.close()
"""


def tick(moment: datetime, period: int = DAY) -> int:
    return int(moment.timestamp()) // period


def ops_of(ledger: Ledger, event_type: str) -> list[Any]:
    out, cursor = [], None
    while True:
        page = ledger.reads.page_for(
            ["security_team"],
            Query(category="ledger_operations", event_type=event_type, limit=1000, cursor=cursor),
        )
        out.extend(page.events)
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


class Replica:
    def __init__(self, settings: Settings, start: datetime) -> None:
        cfg = {
            "start": format_timestamp(start),
            "settings": {
                "database_url": settings.database_url,
                "keys_dir": str(settings.keys_dir),
                "checkpoint_origin": ORIGIN,
                "log_dir": str(Path(str(settings.keys_dir)).parent / "logs"),
            },
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-c", REPLICA, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    @property
    def stdin(self) -> IO[str]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            assert self.proc.stderr is not None
            raise AssertionError(f"replica died: {self.proc.stderr.read()[-2000:]}")
        return line.strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def replicas(settings: Settings) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for _ in range(3):
            started.append(Replica(settings, WEEK_START))
        for replica in started:
            assert replica.read() == "ready"
        yield started
    finally:
        for replica in started:
            replica.close()


def step_all(replicas: list[Replica], moment: datetime) -> list[str]:
    """All replicas run the job at ``moment``, as close to simultaneously as pipes allow."""
    line = format_timestamp(moment) + "\n"
    for replica in replicas:
        replica.stdin.write(line)
        replica.stdin.flush()
    return [replica.read() for replica in replicas]


WEEK_START = datetime(2031, 3, 3, 10, 17, tzinfo=UTC)  # mid-morning: the week spans 8 days


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_three_replicas_run_each_daily_tick_once(
    settings: Settings, replicas: list[Replica]
) -> None:
    # One security event that expires in the middle of the week: purged by exactly one run.
    expiry = WEEK_START + timedelta(days=2, hours=12)
    now = [expiry.replace(year=expiry.year - 5)]
    ledger = Ledger.open(settings, clock=lambda: now[0])
    try:
        (expiring,) = ledger.appends.append(
            ledger.appends.prepare_batch([event("security_events")]), "bot"
        )

        steps = [WEEK_START + timedelta(hours=h) for h in range(7 * 24 + 1)]
        ticks = sorted({tick(t) for t in steps})
        assert len(ticks) == 8  # 2031-03-03 … 2031-03-10, computed from the boundaries
        seen: set[int] = set()
        for moment in steps:
            outcomes = step_all(replicas, moment)
            assert set(outcomes) <= {RAN, BUSY, DONE}, outcomes
            fresh = tick(moment) not in seen
            seen.add(tick(moment))
            assert outcomes.count(RAN) == (1 if fresh else 0), (moment, outcomes)

        runs = ops_of(ledger, "retention_run")
        assert len(runs) == len(ticks)
        # Each run happened at the first hourly step of its day (simulated clock).
        first_steps = [min(t for t in steps if tick(t) == k) for k in ticks]
        assert [r.header["recorded_at"] for r in runs] == [format_timestamp(t) for t in first_steps]
        last_tick, last_run_at, outcome = jobs.runs(ledger.store)["retention"]
        assert (last_tick, last_run_at, outcome) == (
            ticks[-1],
            format_timestamp(first_steps[-1]),
            "ok",
        )

        # The mid-week expiry was purged once, by the first run after it.
        purging = [r for r in runs if r.data["categories"]["security_events"]["payloads_purged"]]
        assert len(purging) == 1
        assert purging[0].header["recorded_at"] == format_timestamp(
            min(t for t in first_steps if t >= expiry)
        )
        view = ledger.reads.view_for(["security_team"], expiring.seq)
        assert (view.payload_state, view.state_seq) == ("purged", purging[0].seq)

        # Down for three days, then back: one catch-up run, not three.
        back = steps[-1] + timedelta(days=3, minutes=5)
        outcomes = step_all(replicas, back)
        assert outcomes.count(RAN) == 1, outcomes
        assert step_all(replicas, back + timedelta(hours=1)).count(RAN) == 0
        assert len(ops_of(ledger, "retention_run")) == len(ticks) + 1
        assert jobs.runs(ledger.store)["retention"][0] == tick(back)
        assert ledger.verification.run().ok
    finally:
        ledger.close()


def test_catch_up_runs_once_in_process(ledger: Ledger) -> None:
    """The tick logic on each backend (SQLite's lock is a file lock): one run per tick."""
    calls: list[Ledger] = []

    def probe(led: Ledger) -> str:
        calls.append(led)
        return "ok"

    job = Job("probe", DAY, probe)
    start = datetime(2031, 1, 1, 23, 0, tzinfo=UTC)
    assert run_job(ledger, job, start) == RAN
    assert run_job(ledger, job, start + timedelta(minutes=59)) == DONE
    assert run_job(ledger, job, start + timedelta(hours=1)) == RAN  # next day
    assert run_job(ledger, job, start + timedelta(days=4)) == RAN  # three days missed: once
    assert run_job(ledger, job, start + timedelta(days=4, hours=0, minutes=30)) == DONE
    assert len(calls) == 3
    assert jobs.runs(ledger.store)["probe"][0] == tick(start + timedelta(days=4))
    # While another replica holds the job's lock, this one skips.
    with jobs.job_lock(ledger.store, "probe") as leader:
        assert leader
        later = start + timedelta(days=9)
        other = Ledger.open(ledger.settings)
        try:
            assert run_job(other, job, later) == BUSY
        finally:
            other.close()
    assert run_job(ledger, job, later) == RAN


def test_background_scheduler_signs_checkpoints(settings: Settings, tmp_path: Path) -> None:
    fast = load_settings(
        database_url=settings.database_url,
        keys_dir=settings.keys_dir,
        checkpoint_origin=ORIGIN,
        checkpoint_interval_seconds=1,
        log_dir=tmp_path / "logs",
    )
    ledger = Ledger.open(fast)
    scheduler = None
    try:
        ledger.appends.append(ledger.appends.prepare_batch([event() for _ in range(5)]), "bot")
        scheduler = start_background(ledger)

        def covered(timeout: float) -> int:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                latest = ledger.log.latest_checkpoint()
                size = ledger.log.size()
                if latest is not None and latest.tree_size == size:
                    return size
                time.sleep(0.2)
            raise AssertionError(f"no checkpoint covers the log ({ledger.log.size()} entries)")

        first = covered(15)
        assert first >= 5
        ledger.appends.append(ledger.appends.prepare_batch([event() for _ in range(3)]), "bot")
        assert covered(15) >= first + 3
        ran = jobs.runs(ledger.store)
        assert {"checkpoint", "retention", "verify"} <= set(ran)
        assert ran["retention"][2] == "ok"
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        ledger.close()
    check = Ledger.open(fast)
    try:
        report = check.verification.run()
        assert report.ok, report.problem
        assert report.checkpoints >= 2
    finally:
        check.close()


def delete_payload_as_superuser(ledger: Ledger, seq: int) -> None:
    """What a database superuser can do: take the guard out of the way, delete a payload."""
    with ledger.store.engine.begin() as conn:
        if ledger.store.dialect == "postgresql":
            conn.execute(text("ALTER TABLE payloads DISABLE TRIGGER payloads_guard_delete"))
        else:
            conn.execute(text("DROP TRIGGER payloads_unrecorded_delete"))
        deleted = conn.execute(text("DELETE FROM payloads WHERE seq = :s"), {"s": seq})
        assert deleted.rowcount == 1


@pytest.mark.parametrize("victim", ["permanent", "expiring"])
def test_hand_deleted_payload_is_tampering_even_after_retention(
    settings: Settings, tmp_path: Path, victim: str
) -> None:
    now = [datetime(2020, 2, 10, 8, 0, tzinfo=UTC)]
    ledger = Ledger.open(
        load_settings(
            database_url=settings.database_url,
            keys_dir=settings.keys_dir,
            checkpoint_origin=ORIGIN,
            log_dir=tmp_path / "logs",
        ),
        clock=lambda: now[0],
    )
    try:
        seqs = [
            r.seq
            for r in ledger.appends.append(
                ledger.appends.prepare_batch(
                    [event(), event("security_events"), event("security_events"), event()]
                ),
                "bot",
            )
        ]
        assert ledger.verification.run().ok
        target = seqs[0] if victim == "permanent" else seqs[1]
        delete_payload_as_superuser(ledger, target)

        report = ledger.verification.run()
        assert not report.ok
        assert report.problem is not None
        assert report.problem.seq == target
        assert "payload missing" in report.problem.reason
        verify_job = next(j for j in default_jobs(ledger) if j.name == "verify")
        assert run_job(ledger, verify_job, now[0]) == RAN
        assert jobs.runs(ledger.store)["verify"][2] == "FAILED"

        # Six years later retention purges the security payloads it can account for; the
        # hand-deleted one stays unaccounted for (no purge record is invented for it).
        now[0] = now[0].replace(year=2026)
        run = ledger.retention.run()
        purged = run.categories["security_events"]
        expected = [[seqs[1], seqs[2]]] if victim == "permanent" else [[seqs[2], seqs[2]]]
        assert purged["seq_ranges"] == expected
        assert ledger.reads.view_for(["security_team"], seqs[2]).payload_state == "purged"
        with ledger.store.reader() as conn:
            recorded = conn.execute(
                text("SELECT count(*) FROM payload_purges WHERE seq = :s"), {"s": target}
            ).scalar_one()
        assert recorded == 0
        after = ledger.verification.run()
        assert after.problem is not None
        assert after.problem.seq == target
        assert "payload missing" in after.problem.reason
        assert run_job(ledger, verify_job, now[0] + timedelta(hours=2)) == RAN
        assert jobs.runs(ledger.store)["verify"][2] == "FAILED"
    finally:
        ledger.close()


# --- verification while the service writes -----------------------------------------------------
# The verify job runs hourly next to appends, checkpoints and retention (at start-up all jobs run
# at once). Entries and the head row change together in one transaction, so whatever lands while
# verify reads is consistent; verify must not mistake it for tampering.


@pytest.fixture
def writer(ledger: Ledger) -> Iterator[Ledger]:
    """A second service instance on the same database, its clock six years ahead."""
    later = datetime.now(UTC) + timedelta(days=6 * 366)
    other = Ledger.open(ledger.settings, clock=lambda: later)
    try:
        yield other
    finally:
        other.close()


def _seed(ledger: Ledger) -> None:
    raws = [event(c) for c in ("financial_transactions", "security_events") for _ in range(6)]
    ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
    assert ledger.log.checkpoint() is not None


def _hook(monkeypatch: pytest.MonkeyPatch, ledger: Ledger, name: str, action: Any) -> list[int]:
    """Run ``action`` once, right before verify's next call of ``ledger.store.<name>``."""
    real = getattr(ledger.store, name)
    fired: list[int] = []

    def hooked(*args: Any, **kwargs: Any) -> Any:
        if not fired:
            fired.append(1)
            action()
        return real(*args, **kwargs)

    monkeypatch.setattr(ledger.store, name, hooked)
    return fired


@pytest.mark.parametrize("moment", ["before the head is read", "before rows are counted"])
def test_verify_ignores_appends_that_land_while_it_reads(
    ledger: Ledger, writer: Ledger, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    _seed(ledger)

    def append_and_sign() -> None:
        writer.appends.append(
            writer.appends.prepare_batch([event(), event("security_events")]), "bot"
        )
        writer.log.checkpoint()

    name = "head" if moment.startswith("before the head") else "count_rows"
    fired = _hook(monkeypatch, ledger, name, append_and_sign)
    report = ledger.verification.run()
    assert fired
    assert report.ok, report.problem
    assert report.size >= 12


def test_verify_ignores_a_retention_run_that_lands_while_it_reads(
    ledger: Ledger, writer: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(ledger)
    purged: list[object] = []
    fired = _hook(
        monkeypatch,
        ledger,
        "count_rows",
        lambda: purged.append(
            writer.retention.run().categories["security_events"]["payloads_purged"]
        ),
    )
    report = ledger.verification.run()
    assert fired
    assert purged == [6]
    assert report.ok, report.problem
    assert ledger.verification.run().payloads_purged == 6


def test_verify_while_writers_and_retention_run(ledger: Ledger, writer: Ledger) -> None:
    _seed(ledger)
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            rounds = 0
            while not stop.is_set():
                writer.appends.append(
                    writer.appends.prepare_batch([event("security_events") for _ in range(3)]),
                    "bot",
                )
                writer.log.checkpoint()
                rounds += 1
                if rounds % 5 == 0:
                    writer.retention.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        problems = [r.problem for r in (ledger.verification.run() for _ in range(12)) if not r.ok]
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not errors, errors
    assert problems == []
    assert ledger.verification.run().ok
