"""``audit-ledger serve --workers N`` with the supervisor of :mod:`audit_ledger.api.server`: real
uvicorn worker processes, each accepting on its own SO_REUSEPORT listening socket of the same port.

Keep-alive connections of a burst are spread over the workers (each worker's
``performance.<pid>.log`` shows what it served); a worker killed with SIGKILL is replaced while
the other keeps serving; SIGTERM to the supervisor stops it and every worker, also when it comes
while the workers are being started; SIGKILL to the supervisor stops every worker too (they get
SIGTERM when it dies); and a port taken by a socket without SO_REUSEPORT makes
``serve`` fail at once with one line and no process left behind.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.integration.api.conftest import LiveServer, cli_env, free_port
from tests.integration.api.test_metrics import observed_server
from tests.support.factories import event
from tests.support.processes import (
    ORPHAN_TIMEOUT,
    alive_after,
    children_of,
    process_age,
    processes_with_args,
)

pytestmark = pytest.mark.process
WORKER_MODULE = "audit_ledger.api.server"
CONNECTIONS = 24
REQUESTS_PER_CONNECTION = 3  # one append and two reads of the verifier key
TRAFFIC_THREADS = 16  # all 16 at the killed worker's socket at once: 2^-16


def worker_processes(port: int) -> list[int]:
    """Server workers of ``port`` (``python -m audit_ledger.api.server 127.0.0.1 PORT``),
    whoever their parent is now — an orphaned worker counts too."""
    return processes_with_args("-m", WORKER_MODULE, "127.0.0.1", str(port))


def workers_of(server: LiveServer) -> list[int]:
    """The supervisor's live worker processes."""
    assert server.process is not None
    return [pid for pid in children_of(server.process.pid) if pid in worker_processes(server.port)]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.05)
    pytest.fail(f"not within {timeout}s: {what}")


def served_by(log_dir: Path, route: str) -> Counter[int]:
    """``pid -> http_request lines for route`` from each worker's ``performance.<pid>.log``."""
    counts: Counter[int] = Counter()
    for path in log_dir.glob("performance.*.log"):
        pid = int(path.name.split(".")[1])
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("event") == "http_request" and record.get("route") == route:
                counts[pid] += 1
    return counts


def ledger_size(settings: Settings) -> int:
    ledger = Ledger.open(settings)
    try:
        return ledger.log.size()
    finally:
        ledger.close()


def fresh_get(server: LiveServer, path: str) -> int:
    """The status of one GET on a connection of its own (so the kernel picks a worker for it);
    plain ``http.client``, much cheaper per connection than a new ``httpx.Client``."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def serve_command(port: int) -> list[str]:
    serve = ["-m", "audit_ledger.cli", "serve"]
    return [sys.executable, *serve, "--workers", "2", "--port", str(port)]


def serve_env(settings: Settings, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Environment and working directory for ``serve`` run by a test itself, as
    :class:`LiveServer` runs it (logs and metric files inside ``tmp_path``)."""
    env = cli_env(settings)
    env["AUDIT_LEDGER_LOG_DIR"] = str(tmp_path / "logs")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    workdir = tmp_path / "workdir"
    workdir.mkdir(exist_ok=True)
    return env, workdir


def first_child(parent: int) -> bool:
    """Whether ``parent`` has a child yet (read as fast as possible: a race is being run)."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    try:
        return bool(children.read_text().strip())
    except FileNotFoundError:  # a kernel without that file: the slower scan of /proc
        return bool(children_of(parent))
    except OSError:
        return False


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    """A started ``serve --workers 2``; afterwards the supervisor's process group is stopped and
    any worker still on its port (an orphan, if the supervisor failed to stop it) is killed."""
    server = observed_server(settings, tmp_path, workers=2)
    server.start()
    try:
        wait_until(lambda: len(workers_of(server)) == 2, 20, "two workers running")
        # /readyz answered by one worker says nothing of the other, which may still be
        # importing (faster since issue #16's start-up work, the first one now often answers
        # before the second is up): wait until each has started uvicorn, its signal handlers
        # installed, as the shutdown tests take for granted.
        assert server.log is not None
        log = server.log
        wait_until(
            lambda: all(
                f"Started server process [{pid}]" in log.read_text() for pid in workers_of(server)
            ),
            60,
            "both workers started",
        )
        yield server
    finally:
        server.stop()
        for pid in worker_processes(server.port):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(60)
def test_keep_alive_connections_are_spread_over_workers(
    two_workers: LiveServer, settings: Settings, tmp_path: Path
) -> None:
    server = two_workers
    workers = set(workers_of(server))
    writer = server.headers("writer")
    size_before = ledger_size(settings)

    async def one_connection(client: httpx.AsyncClient, opened: asyncio.Barrier) -> list[int]:
        statuses = [(await client.post("/v1/events", json=event(), headers=writer)).status_code]
        await opened.wait()  # every connection is open (and kept alive) before the reads
        for _ in range(REQUESTS_PER_CONNECTION - 1):
            statuses.append((await client.get("/v1/log/verifier-key")).status_code)
        return statuses

    async def burst() -> list[list[int]]:
        opened = asyncio.Barrier(CONNECTIONS)
        clients = [
            # One connection per client: every request of a client is on that connection.
            httpx.AsyncClient(
                base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=1)
            )
            for _ in range(CONNECTIONS)
        ]
        try:
            return await asyncio.gather(*(one_connection(c, opened) for c in clients))
        finally:
            for client in clients:
                await client.aclose()

    results = asyncio.run(burst())
    assert all(r == [201] + [200] * (REQUESTS_PER_CONNECTION - 1) for r in results), results

    log_dir = tmp_path / "logs"

    def both_logged() -> tuple[Counter[int], Counter[int]] | None:
        appends = served_by(log_dir, "/v1/events")
        reads = served_by(log_dir, "/v1/log/verifier-key")
        if appends.total() == CONNECTIONS and reads.total() == CONNECTIONS * 2:
            return appends, reads
        return None

    appends, reads = wait_until(both_logged, 10, "every request in a performance log")
    # Both workers served: two distinct pids, and they are the supervisor's workers.
    assert set(appends) == workers, (dict(appends), workers)
    assert set(reads) == workers, (dict(reads), workers)
    # Keep-alive: a worker served the reads of exactly the connections whose append it served.
    assert {pid: n * 2 for pid, n in appends.items()} == dict(reads)
    assert ledger_size(settings) == size_before + CONNECTIONS


@pytest.mark.timeout(60)
def test_killed_worker_is_replaced_while_the_other_serves(
    two_workers: LiveServer, tmp_path: Path
) -> None:
    server = two_workers
    assert server.process is not None
    original = workers_of(server)
    # (Early deaths are restarted too: tests/integration/api/test_supervisor.py.)

    # Requests on fresh connections all along, from several clients at once (one whose
    # connection lands at the killed worker's socket waits until that socket is served again):
    # (started, finished, status or error class).
    outcomes: list[tuple[float, float, int | str]] = []
    done = threading.Event()

    def traffic() -> None:
        while not done.is_set():
            began = time.monotonic()
            try:
                outcome: int | str = fresh_get(server, "/v1/log/verifier-key")
            except (OSError, http.client.HTTPException) as exc:
                outcome = exc.__class__.__name__
            outcomes.append((began, time.monotonic(), outcome))
            time.sleep(0.05)

    # And one keep-alive connection, used before and after.
    keep_alive = httpx.Client(base_url=server.url, timeout=10)
    threads = [threading.Thread(target=traffic, daemon=True) for _ in range(TRAFFIC_THREADS)]
    for thread in threads:
        thread.start()
    try:
        assert keep_alive.get("/v1/log/verifier-key").status_code == 200
        wait_until(lambda: len(outcomes) >= TRAFFIC_THREADS, 20, "traffic before the kill")
        victim, survivor = original
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)

        def replaced() -> list[int] | None:
            now = workers_of(server)
            return now if len(now) == 2 and victim not in now else None

        current = wait_until(replaced, 20, "a new worker in place of the killed one")
        assert survivor in current, "the surviving worker was left alone"
        (replacement,) = set(current) - {survivor}
        # The replacement serves once it has started: fresh connections until one lands on it.
        log_dir = tmp_path / "logs"
        deadline = time.monotonic() + 20
        while not served_by(log_dir, "/healthz")[replacement]:
            assert time.monotonic() < deadline, f"the replacement {replacement} served nothing"
            assert fresh_get(server, "/healthz") == 200
            time.sleep(0.02)
        serving_again_at = time.monotonic()
        wait_until(
            lambda: (
                sum(began > serving_again_at for began, _, _ in list(outcomes)) >= TRAFFIC_THREADS
            ),
            20,
            "traffic after the replacement serves",
        )
        try:
            r = keep_alive.get("/v1/log/verifier-key")
        except httpx.TransportError:  # it was on the killed worker: a new connection works
            r = keep_alive.get("/v1/log/verifier-key")
        assert r.status_code == 200
    finally:
        done.set()
        for thread in threads:
            thread.join(15)
        keep_alive.close()

    assert server.process.poll() is None, "the supervisor is still running"
    assert workers_of(server) == sorted(current), "still two workers, no further restarts"
    before = [o for began, _, o in outcomes if began < killed_at]
    since = [(end - began, o) for began, end, o in outcomes if began >= killed_at]
    # Only requests the killed worker was already handling may fail, in whichever way the
    # kill caught them: before the answer, or half-way through it (IncompleteRead).
    assert before
    killed_in_flight = {"ConnectionResetError", "RemoteDisconnected", "BrokenPipeError"}
    assert set(before) <= {200, "IncompleteRead", *killed_in_flight}, before
    assert before.count(200) >= len(before) - TRAFFIC_THREADS, before
    assert since
    assert {o for _, o in since} == {200}, since
    assert max(took for took, _ in since) < 15, since
    # The survivor served on while its peer was down, and both serve once it is replaced.
    alone = [o for _, end, o in outcomes if killed_at <= end < serving_again_at]
    assert 200 in alone, "nothing was served while one worker was down"
    assert [o for began, _, o in outcomes if began > serving_again_at], "traffic afterwards"


@pytest.mark.timeout(60)
def test_sigterm_to_supervisor_stops_every_worker(two_workers: LiveServer) -> None:
    server = two_workers
    assert server.process is not None
    workers = workers_of(server)
    # Idle keep-alive connections must not hold the shutdown up.
    idle = [httpx.Client(base_url=server.url, timeout=10) for _ in range(4)]
    try:
        for client in idle:
            assert client.get("/healthz").status_code == 200
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)  # the supervisor alone, not its group
        code = server.process.wait(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        for client in idle:
            client.close()
    assert code == 0, server.log.read_text()[-3000:] if server.log else code
    assert elapsed < 30
    assert not [pid for pid in workers if process_age(pid) is not None], "workers left running"
    assert worker_processes(server.port) == [], "no worker of this port is left anywhere"
    with pytest.raises(ConnectionRefusedError), socket.socket() as sock:
        sock.connect(("127.0.0.1", server.port))


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # processes only: one backend
@pytest.mark.timeout(60)
def test_sigkill_to_supervisor_stops_every_worker(two_workers: LiveServer) -> None:
    """A supervisor killed with SIGKILL cannot stop its workers: they must not live on as
    orphans serving the port. The kernel sends each SIGTERM when the supervisor dies, and they
    shut down as gracefully as when the supervisor asks."""
    server = two_workers
    assert server.process is not None
    assert server.log is not None
    workers = workers_of(server)
    assert len(workers) == 2
    os.kill(server.process.pid, signal.SIGKILL)  # the supervisor alone, not its group
    server.process.wait(timeout=10)
    left = alive_after(workers, ORPHAN_TIMEOUT)
    assert left == [], f"workers {left} outlived their supervisor (serving port {server.port})"
    assert worker_processes(server.port) == [], "no worker of this port is left anywhere"
    with pytest.raises(ConnectionRefusedError), socket.socket() as sock:
        sock.connect(("127.0.0.1", server.port))
    log = server.log.read_text()
    for pid in workers:  # uvicorn's own graceful shutdown, to its last line
        assert f"Finished server process [{pid}]" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.timeout(60)
def test_port_taken_without_reuseport_fails_in_one_line(settings: Settings, tmp_path: Path) -> None:
    env, workdir = serve_env(settings, tmp_path)
    with socket.socket() as taken:  # no SO_REUSEPORT: nobody may share this port
        port = free_port()
        taken.bind(("127.0.0.1", port))
        taken.listen()
        try:
            result = subprocess.run(
                serve_command(port),
                env=env,
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=40,
                check=False,
            )
        finally:
            leftovers = worker_processes(port)
            for pid in leftovers:
                os.kill(pid, signal.SIGKILL)
    assert leftovers == [], "workers left running after the failed start"
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("audit-ledger: error: "), lines
    assert str(port) in lines[0] or "in use" in lines[0].lower(), (
        f"the line does not name the problem (port {port} already in use): {lines[0]}"
    )


#: Attempts of the race below: each one catches an unprotected supervisor most of the time.
SIGTERM_AT_START_ATTEMPTS = 3


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # processes only: one backend
@pytest.mark.timeout(60)
def test_sigterm_while_workers_start_leaves_no_worker(settings: Settings, tmp_path: Path) -> None:
    """SIGTERM as soon as the supervisor has started its first worker (a deploy stopping a
    service that is just starting): the supervisor must still stop every worker it started —
    not die of the signal's default action and leave its workers serving the port as orphans."""
    env, workdir = serve_env(settings, tmp_path)
    stderr = tmp_path / "serve.stderr"
    for attempt in range(1, SIGTERM_AT_START_ATTEMPTS + 1):
        port = free_port()
        with stderr.open("wb") as err:  # a file: a pipe would stay open in orphaned workers
            supervisor = subprocess.Popen(
                serve_command(port),
                env=env,
                cwd=workdir,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        try:
            # Its first child is its first worker (preparing the database starts no process),
            # seen from the fork on: the signal comes while the supervisor starts its workers.
            deadline = time.monotonic() + 30
            while not first_child(supervisor.pid):
                assert supervisor.poll() is None, stderr.read_text()
                assert time.monotonic() < deadline, "no worker started within 30 s"
            supervisor.send_signal(signal.SIGTERM)
            try:
                code = supervisor.wait(timeout=15)  # workers just starting: nothing to drain
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"attempt {attempt}: the supervisor did not stop within 15 s of SIGTERM "
                    f"(a worker it started as the signal came was not told to stop?)"
                )
            deadline = time.monotonic() + 5
            while (left := worker_processes(port)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not left, (
                f"attempt {attempt}: the supervisor exited ({code}) and left its workers "
                f"{left} running (serving port {port})"
            )
            assert code == 0, (attempt, code, stderr.read_text())
        finally:
            if supervisor.poll() is None:
                os.killpg(supervisor.pid, signal.SIGKILL)
                supervisor.wait()
            for pid in worker_processes(port):
                os.kill(pid, signal.SIGKILL)
