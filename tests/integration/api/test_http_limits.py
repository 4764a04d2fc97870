"""Issue #12, against a real ``audit-ledger serve`` (uvicorn with the httptools parser): request
heads were unbounded (a 300 MB header to /healthz grew the worker to 497 MiB and got 200), and
nothing bounded time — a partial head or a trickled body held its connection for ever, until
1,100 of them at a 1,024-descriptor limit made real appends fail.

Now (api/protocol.py): a head over ``http_max_head_bytes`` or with more than
``http_max_headers`` fields gets 431 and the connection closed, having buffered little; a head
or body not received in time gets 408 and closed; and connections are capped below the
descriptor limit, a new one evicting the oldest connection still waiting for its client, so real
appends keep working under a slowloris.
"""

from __future__ import annotations

import json
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from audit_ledger.settings import Settings
from tests.support.databases import BACKENDS, fresh_settings
from tests.support.factories import event
from tests.support.polling import wait_until
from tests.support.servers import add_principals, cli_env, free_port

pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]

HEAD_TIMEOUT = 1.5
BODY_IDLE = 1.0
BODY_TOTAL = 3.0
LIMITS_ENV = {
    "AUDIT_LEDGER_HTTP_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
    "AUDIT_LEDGER_HTTP_BODY_IDLE_TIMEOUT_SECONDS": str(BODY_IDLE),
    "AUDIT_LEDGER_HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TOTAL),
}


class Served:
    """A real ``serve`` process (one worker), optionally under a descriptor limit."""

    def __init__(self, settings: Settings, tmp: Path, nofile: int | None = None) -> None:
        self.settings = settings
        self.port = free_port()
        self.tokens = add_principals(settings)
        self.log_dir = tmp / "logs"
        env = {**cli_env(settings), **LIMITS_ENV, "AUDIT_LEDGER_LOG_DIR": str(self.log_dir)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.log = (tmp / "server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "audit_ledger.cli", "serve", "--port", str(self.port)],
            env=env,
            cwd=tmp,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,  # noqa: PLW1509 - only setrlimit, before exec
        )
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, (tmp / "server.log").read_text()
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The parser limits do not depend on the database: one SQLite-backed server for them."""
    tmp = tmp_path_factory.mktemp("limits")
    with fresh_settings("sqlite", request, tmp) as (settings, _):
        served = Served(settings, tmp)
        try:
            yield served
        finally:
            served.stop()


def _connect(server: Served) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _read_all(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything until the server closes (b"" if it closed without answering)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def _problem(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower()
    assert b"connection: close" in head.lower()
    return dict(json.loads(body))


def test_a_huge_header_gets_431_before_it_is_buffered(server: Served) -> None:
    before = server.rss_kib()
    sock = _connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    answer = b""
    chunk = b"a" * 65536
    try:
        while sent < 64 * 1024 * 1024:
            sock.sendall(chunk)
            sent += len(chunk)
            if select.select([sock], [], [], 0)[0]:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = _read_all(sock)
    sock.close()
    assert _status(answer) == 431, answer[:200]
    assert _problem(answer)["status"] == 431
    assert sent < 4 * 1024 * 1024, f"{sent} bytes were taken before the 431"
    assert server.rss_kib() - before < 16 * 1024  # KiB: nothing near the 64 MiB was held
    assert httpx.get(server.url + "/healthz").status_code == 200  # the worker serves on


def test_too_many_header_fields_get_431(server: Served) -> None:
    sock = _connect(server)
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(150))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    answer = _read_all(sock)
    sock.close()
    assert _status(answer) == 431


def test_heads_within_the_limits_are_served(server: Served) -> None:
    headers = {f"X-F{i}": "v" for i in range(90)}
    assert httpx.get(server.url + "/healthz", headers=headers).status_code == 200
    big = {"X-Big": "a" * 15_000}
    assert httpx.get(server.url + "/healthz", headers=big).status_code == 200


def test_a_partial_head_gets_408_in_time(server: Served) -> None:
    sock = _connect(server)
    started = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    answer = _read_all(sock, timeout=HEAD_TIMEOUT + 10)
    took = time.monotonic() - started
    sock.close()
    assert _status(answer) == 408, answer
    assert HEAD_TIMEOUT - 0.2 <= took < HEAD_TIMEOUT + 5


def test_a_head_trickled_byte_by_byte_is_cut_at_the_head_timeout(server: Served) -> None:
    """Not an idle timeout: a byte every 0.3 s keeps none from firing, the head's total does."""
    sock = _connect(server)
    started = time.monotonic()
    answer = b""
    try:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            sock.sendall(bytes([byte]))
            if select.select([sock], [], [], 0.3)[0]:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = _read_all(sock)
    sock.close()
    assert _status(answer) == 408
    assert time.monotonic() - started < HEAD_TIMEOUT + 5


def test_a_silent_connection_is_closed(server: Served) -> None:
    sock = _connect(server)
    assert _read_all(sock, timeout=HEAD_TIMEOUT + 10) == b""
    sock.close()


def test_a_trickled_body_gets_408(server: Served) -> None:
    token = server.tokens["writer"]
    body = json.dumps(event()).encode()
    sock = _connect(server)
    started = time.monotonic()
    sock.sendall(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    try:
        for byte in body:  # one byte per half second: the idle timeout never fires
            sock.sendall(bytes([byte]))
            if select.select([sock], [], [], BODY_IDLE / 2)[0]:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = _read_all(sock)
    sock.close()
    assert _status(answer) == 408, answer
    assert time.monotonic() - started < BODY_TOTAL + 5
    # The app, left waiting for the body, counts it as the client's 408, not a server error.
    logs = server.log_dir
    wait_until(
        lambda: any(
            (record := json.loads(line)).get("status") == 408
            and record.get("route") == "/v1/events"
            for line in (logs / "performance.log").read_text().splitlines()
        ),
        timeout=10,
        message="a 408 line in the performance log",
    )
    errors = logs / "error.log"
    assert not errors.exists() or "request_failed" not in errors.read_text()


def test_a_paused_body_gets_408_after_the_idle_timeout(server: Served) -> None:
    token = server.tokens["writer"]
    sock = _connect(server)
    started = time.monotonic()
    sock.sendall(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: 500\r\n\r\n{{".encode()
    )
    answer = _read_all(sock)
    sock.close()
    assert _status(answer) == 408
    assert time.monotonic() - started < BODY_TOTAL  # the idle timeout, not the total


@pytest.fixture(params=BACKENDS)
def limited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """A server allowed 256 descriptors (so at most 156 client connections)."""
    with fresh_settings(str(request.param), request, tmp_path) as (settings, _):
        served = Served(settings, tmp_path, nofile=256)
        try:
            yield served
        finally:
            served.stop()


def test_real_appends_succeed_under_a_slowloris(limited: Served) -> None:
    """400 attacking connections (more than the server's 256 descriptors) — half trickling a
    head, half a body — reopened as fast as they are closed; meanwhile 60 real appends from 12
    concurrent clients, each on a fresh connection, all succeed quickly."""
    stop = threading.Event()
    opened = 0
    token = limited.tokens["writer"]
    body_head = (
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: 100000\r\n\r\n".encode()
    )

    def attacker(n: int) -> None:
        nonlocal opened
        while not stop.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", limited.port), timeout=5)
            except OSError:
                time.sleep(0.1)
                continue
            opened += 1
            try:
                if n % 2:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                else:
                    sock.sendall(body_head)
                while not stop.is_set():  # a byte every 0.5 s until the server hangs up
                    sock.sendall(b"a" if n % 2 == 0 else b"X")
                    if select.select([sock], [], [], 0.5)[0] and not sock.recv(65536):
                        break
            except OSError:
                pass
            finally:
                sock.close()

    attackers = [threading.Thread(target=attacker, args=(n,), daemon=True) for n in range(400)]
    for thread in attackers:
        thread.start()
    try:
        time.sleep(3)  # every slot taken, descriptors exhausted without the cap

        def append(_: int) -> float:
            began = time.monotonic()
            with httpx.Client(base_url=limited.url, timeout=30) as http:
                r = http.post(
                    "/v1/events",
                    json=event(),
                    headers={"Authorization": f"Bearer {token}", "Connection": "close"},
                )
            assert r.status_code == 201, r.text
            return time.monotonic() - began

        with ThreadPoolExecutor(12) as pool:
            took = list(pool.map(append, range(60)))
        assert max(took) < 10, sorted(took)[-5:]
        assert opened > 400  # the attack went on: closed connections were reopened
    finally:
        stop.set()
        for thread in attackers:
            thread.join(10)
    assert limited.process.poll() is None
