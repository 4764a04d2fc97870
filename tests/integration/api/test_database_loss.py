"""PostgreSQL connections killed in the middle of work, over a real server and the real CLI.

A thread of the test process ends the server's (or the CLI's) database sessions over and over
with ``pg_terminate_backend`` — what a failover, a DBA or an idle-session reaper does — while
clients work: in bursts (every few milliseconds, whatever the service is doing: pre-ping, head
lock, the one-statement write, COMMIT, a read) and aimed at sessions in the middle of a binary
COPY. No fault is injected into the service: its sessions really die.

* Appends (single events and 500-event batches): every answer is 200/201 with receipts or a 503
  problem+json with ``Retry-After`` — never a 500, a traceback or a driver message. Afterwards
  every acknowledged event is in the log once, where its receipt says; no batch is partly there;
  the log verifies; the same server process appends again; resending every 503'd request
  succeeds and leaves each event in the log exactly once.
* Reads (pages, one entry, search, leaves, proofs, checkpoint): 200 with correct content (leaves
  hash to what was written, proofs verify) or 503, never a 500; ``/readyz`` says "unreachable"
  or ready, ``/metrics`` always answers.
* ``audit-ledger append FILE`` (binary COPY per batch): stops with one ``audit-ledger: error:``
  line on stderr and exit 2, having committed whole batches only (a prefix of the file, in
  batch steps); rerunning the file completes and ``audit-ledger verify`` passes.
* A COPY whose session dies after its first row (deterministic, in-process): one
  DatabaseUnavailableError, no driver warning logged, nothing written.

Each scenario needs at least one kill to land on work in flight (a 503, or the CLI stopping); if
a round's kills all missed, the round is repeated, a bounded number of times. The server's own
log must hold no traceback either.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from audit_ledger.core import merkle
from audit_ledger.errors import DatabaseUnavailableError
from audit_ledger.settings import Settings
from audit_ledger.storage.appends import EntryRows
from audit_ledger.storage.store import Store
from tests.conftest import PG_ADMIN_URL
from tests.integration.api.conftest import LiveServer, cli_env
from tests.support.api import CATEGORIES, assert_problem, open_ledger
from tests.support.factories import event

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.process,  # sessions of a serving process are killed under it
    # SQLite is a file opened in-process: there are no sessions to lose.
    pytest.mark.parametrize("backend", ["postgresql"]),
    pytest.mark.timeout(240),
]

KILL_SESSIONS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = %s AND pid <> pg_backend_pid()"
)
#: The same, aimed at sessions in the middle of a binary COPY (the bulk write path).
KILL_COPYING = KILL_SESSIONS + " AND state = 'active' AND query LIKE 'COPY %%'"
#: Rounds of a scenario before giving up on a kill landing on work in flight.
MAX_ROUNDS = 4
BATCH = 500
WRITER = "p-writer"  # the live server's writer principal (tests/integration/api/conftest.py)
#: Text that must never reach a client: driver, ORM or Python internals.
LEAKS = (
    "traceback",
    'file "',
    "psycopg",
    "sqlalchemy",
    "operationalerror",
    "terminating connection",
    "administrator command",
    "server closed",
    "consuming input",
    "pg_",
)


# --- killing sessions ---------------------------------------------------------------------------


class SessionKiller:
    """Terminates sessions of one database from a thread, in cycles of two kinds:

    * ``burst``: every session, every 2-10 ms for 10-100 ms — whatever the service is doing
      then dies, reconnecting included;
    * ``copy``: watches (every millisecond, for up to 300 ms) for a session in the middle of a
      binary COPY and terminates it — a window that blind kills rarely hit.

    Between cycles it rests up to ``max_quiet`` seconds, so that some work gets through.
    """

    def __init__(
        self, database_url: str, *, seed: int, max_quiet: float, modes: tuple[str, ...]
    ) -> None:
        name = make_url(database_url).database
        assert name
        self.dbname = name
        self.rng = random.Random(seed)
        self.max_quiet = max_quiet
        self.modes = modes
        self.killed = 0  # sessions terminated
        self.killed_in_copy = 0  # of which caught copying
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="session-killer", daemon=True)

    def _kill(self, admin: psycopg.Connection[Any], query: str) -> int:
        rows = admin.execute(query, (self.dbname,)).fetchall()
        return sum(1 for (done,) in rows if done)

    def _run(self) -> None:
        try:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                while not self._stop.is_set():
                    mode = self.rng.choice(self.modes)
                    until = time.monotonic() + (
                        self.rng.uniform(0.01, 0.1) if mode == "burst" else 0.3
                    )
                    while time.monotonic() < until and not self._stop.is_set():
                        if mode == "burst":
                            self.killed += self._kill(admin, KILL_SESSIONS)
                            self._stop.wait(self.rng.uniform(0.002, 0.01))
                        elif killed := self._kill(admin, KILL_COPYING):
                            self.killed += killed
                            self.killed_in_copy += killed
                            break
                        else:
                            self._stop.wait(0.001)
                    self._stop.wait(self.rng.uniform(0, self.max_quiet))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread in stop()
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the session killer did not stop"
        assert self.error is None, f"the session killer failed: {self.error!r}"


@contextmanager
def killing_sessions(
    database_url: str, *, seed: int, max_quiet: float, modes: tuple[str, ...] = ("burst", "copy")
) -> Iterator[SessionKiller]:
    killer = SessionKiller(database_url, seed=seed, max_quiet=max_quiet, modes=modes)
    killer.start()
    try:
        yield killer
    finally:
        killer.stop()


# --- checks -------------------------------------------------------------------------------------


def assert_no_leak(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path}"
    text = response.text.lower()
    for leak in LEAKS:
        assert leak not in text, f"{where} answered {response.status_code} with {leak!r}: {text}"


def assert_unavailable(response: httpx.Response) -> None:
    """The 503 of a lost database: problem+json, ``Retry-After``, nothing internal."""
    assert_problem(response, 503)
    assert response.json()["type"].endswith(":unavailable"), response.text
    assert_no_leak(response)


def entries_by_event_id(database_url: str) -> dict[str, tuple[int, str, str, str]]:
    """``event_id -> (seq, leaf hash hex, recorded_at, writer)`` of every entry, straight from
    the database; also checks that no event_id appears twice."""
    url = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT event_id, seq, leaf_hash, recorded_at, writer FROM entries ORDER BY seq"
        ).fetchall()
    out = {str(r[0]): (int(r[1]), bytes(r[2]).hex(), str(r[3]), str(r[4])) for r in rows}
    assert len(out) == len(rows), "an event_id is in the log more than once"
    return out


def assert_no_traceback_logged(server: LiveServer) -> None:
    """Failures are logged as one JSON line naming the error class, never a traceback."""
    assert server.log is not None
    log = server.log.read_text(encoding="utf-8")
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:3000]


def assert_verifies(settings: Settings) -> None:
    with open_ledger(settings) as ledger:
        report = ledger.verification.run()
    assert report.ok, report.problem


# --- appends ------------------------------------------------------------------------------------


@dataclass
class Sent:
    """One append request and what it got."""

    events: list[dict[str, Any]]
    single: bool
    status: int = 0
    receipts: list[dict[str, Any]] = field(default_factory=list)

    def send(self, client: httpx.Client, server: LiveServer) -> httpx.Response:
        writer = server.headers("writer")
        if self.single:
            return client.post("/v1/events", json=self.events[0], headers=writer)
        return client.post("/v1/events/batch", json={"events": self.events}, headers=writer)

    def record(self, response: httpx.Response) -> None:
        """Keep the outcome; anything but a receipt or a 503 fails the test."""
        self.status = response.status_code
        if self.status == 503:
            assert_unavailable(response)
            self.receipts = []
            return
        where = "single" if self.single else "batch"
        assert self.status in (200, 201), f"{where}: {self.status} {response.text}"
        body = response.json()
        self.receipts = [body] if self.single else body["receipts"]
        assert [r["event_id"] for r in self.receipts] == [e["event_id"] for e in self.events]
        for receipt in self.receipts:
            assert set(receipt) == {"seq", "event_id", "leaf_hash", "recorded_at"}, receipt


def _appender(server: LiveServer, requests: list[Sent]) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for sent in requests:
            sent.record(sent.send(client, server))


def _new_requests(rng: random.Random) -> list[list[Sent]]:
    """Per client thread: two of single events, two of 500-event batches (all categories)."""
    singles = [
        [
            Sent([event(rng.choice(CATEGORIES), user_id=rng.randrange(1, 40))], True)
            for _ in range(30)
        ]
        for _ in range(2)
    ]
    batches = [
        [
            Sent(
                [event(rng.choice(CATEGORIES), user_id=rng.randrange(1, 40)) for _ in range(BATCH)],
                False,
            )
            for _ in range(3)
        ]
        for _ in range(2)
    ]
    return singles + batches


def _run_threads(target: Callable[..., None], per_thread: list[Any]) -> None:
    with ThreadPoolExecutor(len(per_thread)) as pool:
        for future in [pool.submit(target, arg) for arg in per_thread]:
            future.result(timeout=180)  # re-raises a thread's assertion


def _assert_log_matches(
    server: LiveServer, sent: list[Sent]
) -> dict[str, tuple[int, str, str, str]]:
    """Acknowledged events sit where their receipts say; refused batches are all in or all out;
    nothing else of this writer is in the log."""
    stored = entries_by_event_id(server.settings.database_url)
    for request in sent:
        if request.status == 503:
            present = sum(e["event_id"] in stored for e in request.events)
            # Present only if the kill came after the COMMIT reached the server (the answer
            # was lost): then all of it, never part.
            assert present in (0, len(request.events)), f"a batch is partly in the log: {present}"
            continue
        for receipt in request.receipts:
            seq, leaf_hash, recorded_at, writer = stored[receipt["event_id"]]
            assert (seq, leaf_hash, recorded_at) == (
                receipt["seq"],
                receipt["leaf_hash"],
                receipt["recorded_at"],
            ), receipt
            assert writer == WRITER
    ours = {e["event_id"] for request in sent for e in request.events}
    theirs = {eid for eid, (_, _, _, writer) in stored.items() if writer == WRITER}
    assert theirs <= ours, "the log holds writer events nobody sent"
    return stored


def test_appends_survive_killed_sessions(live_server: LiveServer) -> None:
    server = live_server
    sent: list[Sent] = []
    kills = 0
    for round_ in range(MAX_ROUNDS):
        per_thread = _new_requests(random.Random(round_))
        with killing_sessions(server.settings.database_url, seed=round_, max_quiet=0.4) as killer:
            _run_threads(lambda requests: _appender(server, requests), per_thread)
        kills += killer.killed
        sent.extend(request for requests in per_thread for request in requests)
        outcomes = {(request.single, request.status == 503) for request in sent}
        if len(outcomes) == 4:
            break
    # Kills landed on single events and on batches in flight, and work got through between.
    assert (True, True) in outcomes, f"no kill of {kills} sessions hit a single append"
    assert (False, True) in outcomes, f"no kill of {kills} sessions hit a batch append"
    assert (True, False) in outcomes, "no single append got through between the kills"

    _assert_log_matches(server, sent)
    assert_verifies(server.settings)

    # The same server process appends again: no restart, no manual step.
    assert server.process is not None
    assert server.process.poll() is None
    with httpx.Client(base_url=server.url, timeout=60) as client:
        after = [Sent([event()], True), Sent([event() for _ in range(BATCH)], False)]
        for request in after:
            response = request.send(client, server)
            assert response.status_code == 201, response.text
            request.record(response)

        # Every refused request again: each succeeds (a batch whose COMMIT landed before the
        # kill is a replay, 200 with its original receipts), and no event is in twice.
        refused = [request for request in sent if request.status == 503]
        for request in refused:
            response = request.send(client, server)
            assert response.status_code in (200, 201), response.text
            request.record(response)
    stored = _assert_log_matches(server, sent + after)
    everything = {e["event_id"] for request in sent + after for e in request.events}
    assert everything <= set(stored), "a resent event is missing"
    assert sum(writer == WRITER for _, _, _, writer in stored.values()) == len(everything)
    assert_verifies(server.settings)
    assert_no_traceback_logged(server)


# --- reads --------------------------------------------------------------------------------------


@dataclass
class ReadPlan:
    """Reads against a log whose first ``size`` leaves the test knows."""

    size: int
    leaf_hashes: list[bytes]

    def root(self, n: int) -> bytes:
        return merkle.reference_root(self.leaf_hashes[:n])

    def calls(self, rng: random.Random) -> list[tuple[str, str, str, dict[str, Any]]]:
        """``(role, method, path, kwargs)`` of one pass over every read endpoint (role "":
        no credentials)."""
        seq = rng.randrange(self.size)
        start = rng.randrange(self.size - 100)
        first = rng.randrange(1, self.size)
        return [
            ("auditor", "GET", "/v1/events", {"params": {"limit": 50}}),
            (
                "compliance_officer",
                "GET",
                "/v1/events",
                {"params": {"category": "financial_transactions", "limit": 20}},
            ),
            ("auditor", "GET", f"/v1/events/{seq}", {}),
            ("privacy_officer", "POST", "/v1/events/search", {"json": {"user_id": 7}}),
            ("auditor", "GET", "/v1/log/leaves", {"params": {"start": start, "end": start + 100}}),
            (
                "auditor",
                "GET",
                "/v1/log/proof/inclusion",
                {"params": {"seq": seq, "tree_size": self.size}},
            ),
            (
                "auditor",
                "GET",
                "/v1/log/proof/consistency",
                {"params": {"first": first, "second": self.size}},
            ),
            ("auditor", "GET", "/v1/log/checkpoint", {}),
            # Public: readiness says "unreachable" (never "not migrated"); a scrape never fails.
            ("", "GET", "/readyz", {}),
            ("", "GET", "/metrics", {}),
        ]

    def check(self, path: str, kwargs: dict[str, Any], response: httpx.Response) -> None:
        """A 200 must be right, not merely well-formed."""
        body: Any = response.text if path == "/v1/log/checkpoint" else response.json()
        params = kwargs.get("params", {})
        if path == "/v1/log/leaves":
            leaves = body["leaves"]
            assert [leaf["seq"] for leaf in leaves] == list(range(params["start"], params["end"]))
            for leaf in leaves:
                digest = merkle.leaf_hash(base64.b64decode(leaf["leaf"]))
                assert digest == self.leaf_hashes[leaf["seq"]], leaf["seq"]
        elif path == "/v1/log/proof/inclusion":
            hashes = [bytes.fromhex(h) for h in body["hashes"]]
            seq, size = params["seq"], params["tree_size"]
            merkle.verify_inclusion(seq, size, self.leaf_hashes[seq], hashes, self.root(size))
        elif path == "/v1/log/proof/consistency":
            hashes = [bytes.fromhex(h) for h in body["hashes"]]
            first, second = params["first"], params["second"]
            merkle.verify_consistency(first, second, self.root(first), self.root(second), hashes)
        elif path == "/v1/log/checkpoint":
            assert body.splitlines()[1].isdigit(), body
        elif path.startswith("/v1/events/") and path != "/v1/events/search":
            assert body["seq"] == int(path.rsplit("/", 1)[1]), body
        else:
            assert isinstance(body["events"], list), body
            assert body["events"], body


def _check_readiness(response: httpx.Response) -> None:
    body = response.json()
    if response.status_code == 200:
        assert body["status"] == "ready", body
        return
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert body["checks"] == {"keys": "ok", "database": "unreachable", "schema": "unknown"}, body


def _reader(server: LiveServer, plan: ReadPlan, seed: int, statuses: list[int]) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(8):
            for role, method, path, kwargs in plan.calls(rng):
                headers = server.headers(role) if role else {}
                response = client.request(method, path, headers=headers, **kwargs)
                if path == "/readyz":
                    _check_readiness(response)
                    continue
                if path == "/metrics":
                    assert response.status_code == 200, response.text
                    assert "\nledger_database_up " in response.text
                    continue
                statuses.append(response.status_code)
                if response.status_code == 503:
                    assert_unavailable(response)
                    continue
                assert response.status_code == 200, (
                    f"{path}: {response.status_code} {response.text}"
                )
                assert_no_leak(response)
                plan.check(path, kwargs, response)


def test_reads_survive_killed_sessions(live_server: LiveServer) -> None:
    server = live_server
    with httpx.Client(base_url=server.url, timeout=60) as client:
        rng = random.Random(1)
        for _ in range(2):
            events = [
                event(rng.choice(CATEGORIES), user_id=rng.randrange(1, 20)) for _ in range(BATCH)
            ]
            r = client.post(
                "/v1/events/batch", json={"events": events}, headers=server.headers("writer")
            )
            assert r.status_code == 201, r.text
        with open_ledger(server.settings) as ledger:
            assert ledger.log.checkpoint() is not None
            size = ledger.log.size()
        hashes: list[bytes] = []
        while len(hashes) < size:  # pages of at most 1000 leaves
            params = {"start": len(hashes), "end": min(size, len(hashes) + 1000)}
            page = client.get("/v1/log/leaves", params=params, headers=server.headers("auditor"))
            assert page.status_code == 200, page.text
            hashes += [merkle.leaf_hash(base64.b64decode(x["leaf"])) for x in page.json()["leaves"]]
        assert len(hashes) == size
    plan = ReadPlan(size, hashes)

    statuses: list[int] = []
    kills = 0
    for round_ in range(MAX_ROUNDS):
        with killing_sessions(
            server.settings.database_url, seed=100 + round_, max_quiet=0.2
        ) as killer:
            _run_threads(
                lambda seed: _reader(server, plan, seed, statuses),
                [round_ * 10 + i for i in range(3)],
            )
        kills += killer.killed
        if 503 in statuses and 200 in statuses:
            break
    assert 503 in statuses, f"no kill of {kills} sessions hit a read in flight"
    assert 200 in statuses, "no read got through between the kills"

    # Reads record themselves in ledger_operations: those writes, cut short, left no damage.
    assert_verifies(server.settings)
    assert server.process is not None
    assert server.process.poll() is None
    statuses.clear()
    _reader(server, plan, 999, statuses)
    assert set(statuses) == {200}
    assert_no_traceback_logged(server)


# --- the COPY path, cut short on purpose -----------------------------------------------------


class _KillAfterFirst(list[tuple[Any, ...]]):
    """Rows whose iteration (the COPY writing them) ends the session after the first one."""

    def __init__(self, rows: list[tuple[Any, ...]], kill: Callable[[], None]) -> None:
        super().__init__(rows)
        self.kill = kill

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        rows = super().__iter__()
        yield next(rows)
        self.kill()
        yield from rows


def _copy_killed_after_first_row(store: Store, admin: psycopg.Connection[Any]) -> None:
    """Append 20,000 made-up entries (20 MB: binary COPY) and end the session after the first."""
    with store.writer() as tx:
        head = tx.head()
        pid = tx.conn.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]

        def kill() -> None:
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))

        stamp = "2026-11-28T03:55:17.123456Z"
        rows = [
            (head.size + i, str(uuid.uuid4()), "financial_transactions", "payment_completed",
             stamp, stamp, "test", None, bytes(32), bytes(1000))
            for i in range(20_000)
        ]  # fmt: skip
        tx.write_entries(EntryRows(entries=_KillAfterFirst(rows, kill)), head, {}, 1)


def test_a_copy_cut_short_is_one_clean_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The kills above land in the middle of a COPY's data only now and then; here the session
    dies right after the first row of a 20 MB COPY, every time. The append fails with
    DatabaseUnavailableError and nothing else: no warning logged by the driver (psycopg's own
    "error ignored terminating <psycopg.Copy [BAD]>", which the CLI printed raw on stderr
    above its one-line error), and nothing written."""
    caplog.set_level(logging.DEBUG)
    with open_ledger(settings) as ledger, psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        size = ledger.log.size()
        with pytest.raises(DatabaseUnavailableError):
            _copy_killed_after_first_row(ledger.store, admin)
        assert ledger.log.size() == size
    noise = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert noise == [], [r.getMessage() for r in noise]


# --- the CLI's bulk import ----------------------------------------------------------------------


def _cli(settings: Settings, *args: str, stdout: Path, stderr: Path) -> subprocess.Popen[bytes]:
    with stdout.open("wb") as out, stderr.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "audit_ledger.cli", *args],
            env=cli_env(settings),
            stdout=out,
            stderr=err,
        )


def _cli_rows(database_url: str, event_ids: set[str]) -> set[str]:
    stored = entries_by_event_id(database_url)
    assert all(stored[eid][3] == "cli" for eid in event_ids & set(stored))
    return event_ids & set(stored)


def _wait_for_first_commit(settings: Settings, process: subprocess.Popen[bytes]) -> None:
    """Until the import has committed something (or ended): the kills should land mid-import."""
    url = make_url(settings.database_url).set(drivername="postgresql").render_as_string(False)
    deadline = time.monotonic() + 60
    with psycopg.connect(url, autocommit=True) as conn:
        while process.poll() is None and time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM entries WHERE writer = 'cli'").fetchone()
            if row is not None and row[0] > 0:
                return
            time.sleep(0.005)


@pytest.mark.parametrize(("jobs", "aim"), [(1, "copy"), (2, "burst")])
def test_bulk_import_stops_cleanly_and_reruns(
    settings: Settings, tmp_path: Path, jobs: int, aim: str
) -> None:
    """Killed in the middle of a COPY, and anywhere; in one process, and with worker processes
    parsing ahead (what files of 4 MiB or more get)."""
    options = ("--batch-size", str(BATCH), "--jobs", str(jobs))
    total = 12 * BATCH
    for round_ in range(MAX_ROUNDS):
        rng = random.Random(round_)
        lines = [
            json.dumps(event(rng.choice(CATEGORIES), user_id=rng.randrange(1, 40)))
            for _ in range(total)
        ]
        source = tmp_path / f"import-{round_}.jsonl"
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        ids = [json.loads(line)["event_id"] for line in lines]
        out, err = tmp_path / f"out-{round_}", tmp_path / f"err-{round_}"
        process = _cli(settings, "append", str(source), *options, stdout=out, stderr=err)
        try:
            _wait_for_first_commit(settings, process)
            with killing_sessions(
                settings.database_url, seed=200 + round_, max_quiet=0.02, modes=(aim,)
            ) as killer:
                code = process.wait(timeout=60)  # a hang fails here
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if code != 0 and (aim != "copy" or killer.killed_in_copy):
            break
    else:
        pytest.fail(f"no kill stopped the import in {MAX_ROUNDS} rounds")

    stderr, stdout = err.read_text(), out.read_text()
    assert code == 2, (code, stdout, stderr)
    assert stdout == ""
    assert "Traceback" not in stderr
    error_lines = stderr.strip().splitlines()
    assert len(error_lines) == 1, stderr
    assert error_lines[0].startswith("audit-ledger: error: "), stderr
    assert "database connection was lost during the import" in error_lines[0], stderr
    assert "rerunning the same input is safe" in error_lines[0], stderr
    assert not any(leak in error_lines[0].lower() for leak in LEAKS if leak != "pg_"), stderr

    # What committed is whole batches, in file order: a prefix of the file in batch steps.
    committed = _cli_rows(settings.database_url, set(ids))
    whole = len(committed) // BATCH
    assert len(committed) % BATCH == 0, f"{len(committed)} events: a batch is partly in the log"
    assert committed == set(ids[: whole * BATCH])
    # The error's count is a lower bound: the batch whose commit was cut off may be in too.
    claimed = re.search(r"committed before it: at least (\d+)", error_lines[0])
    assert claimed is not None, stderr
    assert 0 <= len(committed) - int(claimed.group(1)) <= BATCH, (claimed, len(committed))

    rerun = subprocess.run(
        [
            sys.executable,
            "-m",
            "audit_ledger.cli",
            "append",
            str(source),
            *options,
        ],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout.strip().splitlines()[-1]) == {
        "appended": total - len(committed),
        "already_present": len(committed),
    }
    assert _cli_rows(settings.database_url, set(ids)) == set(ids)
    verify = subprocess.run(
        [sys.executable, "-m", "audit_ledger.cli", "verify"],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
