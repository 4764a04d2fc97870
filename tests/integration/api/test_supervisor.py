"""Issue #12: with ``serve --workers 2`` a worker killed 3 s after start made the supervisor stop
every worker and exit 2 — any early death was taken for a configuration error. Now early deaths
are restarted with backoff, and the supervisor gives up (exit 2, one line saying why) only on a
persistent failure: a worker that never becomes ready, or one that keeps dying.

The supervisor's bookkeeping is driven with tiny real worker processes (``python -c``) that say
"ready" and die, or die without; the real ``serve`` is then killed early and made to fail at
every start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from audit_ledger.api.supervisor import MAX_DEATHS, MAX_START_FAILURES, Supervisor
from audit_ledger.errors import ConfigError
from audit_ledger.settings import Settings
from tests.integration.api.conftest import LiveServer
from tests.integration.api.test_metrics import observed_server
from tests.integration.api.test_workers import serve_command, serve_env, workers_of
from tests.support.factories import event
from tests.support.polling import wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

#: argv[1] is the listening socket's fd, argv[2] the readiness pipe's (Supervisor appends them)
READY_THEN_DIE = "import os, sys, time; os.write(int(sys.argv[2]), b'r'); time.sleep(0.2)"
NEVER_READY = "import sys; sys.exit(3)"


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.set_inheritable(True)
    try:
        yield sock
    finally:
        sock.close()


def test_a_worker_that_never_becomes_ready_makes_it_give_up(
    listening: socket.socket, capfd: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        Supervisor([sys.executable, "-c", NEVER_READY], [listening]).run()
    took = time.monotonic() - started
    assert str(caught.value) == (
        f"server worker 0 failed to start {MAX_START_FAILURES} times in a row "
        "(last: exit code 3); giving up — see the worker's error above"
    )
    restarts = [line for line in capfd.readouterr().err.splitlines() if "restarting" in line]
    assert len(restarts) == MAX_START_FAILURES - 1  # it did retry, with backoff
    assert "before it was ready; restarting it in 0.5 s" in restarts[0]
    assert "restarting it in 1.0 s" in restarts[1]
    assert took >= 1.5


def test_a_worker_that_keeps_dying_after_ready_makes_it_give_up(
    listening: socket.socket, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        Supervisor([sys.executable, "-c", READY_THEN_DIE], [listening]).run()
    assert str(caught.value).startswith(f"server worker 0 died {MAX_DEATHS} times within 60 s")
    err = capfd.readouterr().err
    assert err.count("after it was ready; restarting") == MAX_DEATHS - 1


def test_an_early_sigkill_is_restarted(settings: Settings, tmp_path: Path) -> None:
    """The issue's case: a worker SIGKILLed seconds after start (as soon as the server answers)."""
    server = observed_server(settings, tmp_path, workers=2)
    server.start()
    try:
        assert server.process is not None
        original = wait_until(
            lambda: w if len(w := workers_of(server)) == 2 else None,
            timeout=30,
            message="two workers",
        )
        victim = original[0]
        os.kill(victim, signal.SIGKILL)
        current = wait_until(
            lambda: w if len(w := workers_of(server)) == 2 and victim not in w else None,
            timeout=30,
            message="a replacement worker",
        )
        assert original[1] in current
        assert server.process.poll() is None, "the supervisor kept running"
        _serves_appends(server)
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert "killed by SIGKILL" in log
    assert "restarting it in 0.5 s" in log


def _serves_appends(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, headers=server.headers("writer"), timeout=30) as http:
        for _ in range(10):
            # A fresh connection each: the kernel spreads them over both workers' sockets.
            r = http.post("/v1/events", json=event(), headers={"Connection": "close"})
            assert r.status_code == 201, r.text


def test_serve_whose_workers_always_fail_exits_2_saying_why(
    settings: Settings, tmp_path: Path
) -> None:
    """Every worker fails at start (its log directory is a file): the supervisor retries, then
    stops with one line naming the persistent failure."""
    env, workdir = serve_env(settings, tmp_path)
    not_a_dir = tmp_path / "logs-file"
    not_a_dir.write_text("")
    env["AUDIT_LEDGER_LOG_DIR"] = str(not_a_dir)
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()
    result = subprocess.run(
        serve_command(number),
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("audit-ledger: error: server worker ")
    assert f"failed to start {MAX_START_FAILURES} times in a row" in last
    assert "giving up" in last
