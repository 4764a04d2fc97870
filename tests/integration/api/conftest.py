"""A real uvicorn server (``audit-ledger serve`` in a subprocess) for HTTP tests.

``live_server`` starts the CLI on a free port against the test database, creates one principal
per role (tokens captured from the last line of ``principals add``), waits for ``/readyz`` and
stops the server afterwards. ``start_server``/``stop_server`` let tests restart it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.conftest import ORIGIN

ROLE_NAMES = (
    "writer",
    "compliance_officer",
    "privacy_officer",
    "security_team",
    "auditor",
    "admin",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AUDIT_LEDGER_DATABASE_URL=settings.database_url,
        AUDIT_LEDGER_KEYS_DIR=str(settings.keys_dir),
        AUDIT_LEDGER_CHECKPOINT_ORIGIN=ORIGIN,
        # Background jobs append ledger_operations entries at start-up (retention catch-up);
        # HTTP tests count entries, so only the scheduler's own tests turn them on.
        AUDIT_LEDGER_SCHEDULER_ENABLED="false",
        AUDIT_LEDGER_LOG_DIR=str(Path(settings.keys_dir).parent / "logs"),
    )
    return env


def run_cli(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "audit_ledger.cli", *args],
        env=cli_env(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass
class LiveServer:
    settings: Settings
    port: int
    tokens: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    workers: int = 1
    #: Working directory of the server process (metric files, default SQLite paths).
    cwd: Path | None = None
    #: Extra environment on top of :func:`cli_env`.
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def start(self) -> None:
        assert self.log is not None
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "audit_ledger.cli",
                    "serve",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ],
                env=self._env(),
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready within 60 s")

    def _env(self) -> dict[str, str]:
        env = {**cli_env(self.settings), **self.extra_env}
        if "PROMETHEUS_MULTIPROC_DIR" not in self.extra_env:
            # One inherited from the test runner would be shared with other servers.
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return env

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        self.process = None


def make_server(settings: Settings, tmp_path: Path, workers: int = 1) -> LiveServer:
    """A server (not started) with one principal per role plus a revoked auditor.

    Principals are made in-process (the CLI path has its own tests) to keep fixtures fast.
    """
    server = LiveServer(settings, free_port(), log=tmp_path / "server.log", workers=workers)
    ledger = Ledger.open(settings)
    try:
        for role in ROLE_NAMES:
            server.tokens[role] = ledger.principals.add(f"p-{role}", [role])
        server.tokens["revoked"] = ledger.principals.add("p-revoked", ["auditor"])
        ledger.principals.revoke("p-revoked")
    finally:
        ledger.close()
    return server


@pytest.fixture
def live_server(settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    server = make_server(settings, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
