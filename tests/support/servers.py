"""Servers for HTTP tests: the app in this process, or a real ``audit-ledger serve``.

* :class:`InProcessServer` (:func:`in_process_server`) runs the application built by
  ``create_app(ledger=...)`` inside the test process: its lifespan (group committer) runs on an
  event loop in a background thread and requests go straight to the ASGI app through
  ``httpx.ASGITransport`` — no port, no subprocess, no start-up wait. The ledger is opened by
  the test, so the app configures no logging, starts no scheduler and freezes no garbage
  collector (all process-wide), which is what a test process needs. Use it for everything that
  is about the HTTP contract.
* :class:`ThreadedServer` (:func:`threaded_server`) serves the same app with uvicorn on a real
  socket from a thread of the test process, for clients that need a URL (a CLI subprocess, an
  HTTP client with an event loop of its own).
* :class:`LiveServer` (:func:`make_server`) starts the CLI (``audit-ledger serve``) in a
  subprocess on a free port. Keep it for what needs a real process (tests marked ``process``):
  crashes and signals, worker processes, parent death, ports, exit codes, restarts, log files
  and metrics written by a serving process, and clients that talk over a socket.

Both carry ``settings``, ``tokens`` (one principal per role plus a revoked auditor) and
``headers(role)``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from anyio.from_thread import BlockingPortal, start_blocking_portal

from audit_ledger.api.app import create_app
from audit_ledger.cli import main as cli_main
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.conftest import ORIGIN
from tests.support.databases import BACKENDS, fresh_settings
from tests.support.polling import wait_until

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
    """``audit-ledger <args>`` in a subprocess with the test database and keys."""
    return subprocess.run(
        [sys.executable, "-m", "audit_ledger.cli", *args],
        env=cli_env(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_cli_here(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``audit-ledger <args>`` in this process, answered like :func:`run_cli`.

    For the many usage-error cases of one command: the exit code and the one stderr line are
    the real program's (``main`` is what ``__main__`` calls), without a ~0.5 s interpreter start
    each. A traceback cannot hide here: an uncaught exception fails the test.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(cli_env(settings))
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = cli_main(list(args))
            except SystemExit as exc:  # argparse usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(
        ["audit-ledger", *args], code, stdout.getvalue(), stderr.getvalue()
    )


def add_principals(settings: Settings) -> dict[str, str]:
    """One principal per role plus a revoked auditor; their tokens by role (and "revoked").

    Made in-process (the CLI path has its own tests) to keep fixtures fast.
    """
    tokens: dict[str, str] = {}
    ledger = Ledger.open(settings)
    try:
        for role in ROLE_NAMES:
            tokens[role] = ledger.principals.add(f"p-{role}", [role])
        tokens["revoked"] = ledger.principals.add("p-revoked", ["auditor"])
        ledger.principals.revoke("p-revoked")
    finally:
        ledger.close()
    return tokens


# --- in this process ------------------------------------------------------------------------


async def _async_chunks(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@dataclass
class InProcessServer:
    """The application served in the test process; requests are synchronous calls."""

    settings: Settings
    tokens: dict[str, str]
    _portal: BlockingPortal
    _client: httpx.AsyncClient
    #: The ASGI app itself, for clients of their own (tests.support.console: one per browser).
    app: Any = None

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Like ``httpx.request`` with a path instead of a URL. A ``content`` iterator is sent
        as a stream (no Content-Length), as httpx would send it over a socket."""
        content = kwargs.get("content")
        if content is not None and not isinstance(content, bytes | str):
            kwargs["content"] = _async_chunks(content)
        call = functools.partial(self._client.request, method, path, **kwargs)
        return self._portal.call(call)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    @contextmanager
    def session(self) -> Iterator[InProcessServer]:
        """Where a test would open ``httpx.Client(base_url=...)``: this server itself."""
        yield self


@contextmanager
def in_process_server(settings: Settings) -> Iterator[InProcessServer]:
    """Principals as :func:`add_principals` makes them, then the app on ``settings``' database
    with its lifespan running until the block ends."""
    tokens = add_principals(settings)
    ledger = Ledger.open(settings)
    try:
        app = create_app(ledger=ledger)
        with (
            start_blocking_portal(backend="asyncio") as portal,
            portal.wrap_async_context_manager(app.router.lifespan_context(app)),
        ):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            try:
                yield InProcessServer(settings, tokens, portal, client, app)
            finally:
                portal.call(client.aclose)
    finally:
        ledger.close()


def module_app_server(name: str = "server") -> Any:
    """A module-scoped fixture named ``name``: one in-process server per backend, shared by
    the module's tests. They must not assume an empty log (reads append ``records_read``
    entries, other tests append events)."""

    @pytest.fixture(scope="module", name=name, params=BACKENDS)
    def _server(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[InProcessServer]:
        backend = str(request.param)
        tmp = tmp_path_factory.mktemp(f"app-{backend}")
        with (
            fresh_settings(backend, request, tmp) as (settings, _),
            in_process_server(settings) as server,
        ):
            yield server

    return _server


# --- on a socket, in this process -------------------------------------------------------------


@dataclass
class ThreadedServer:
    """The application on a real socket, served by uvicorn in a thread of the test process.

    For clients that need a URL (the CLI in a subprocess, an HTTP client with its own event
    loop) without the cost of starting a server process. ``stop``/``start`` serve again on the
    same port with a freshly opened ledger, as a restarted server would.
    """

    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)
    port: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _ledger: Ledger | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def start(self) -> None:
        assert self._server is None, "already serving"
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = int(sock.getsockname()[1])
        self._ledger = Ledger.open(self.settings)
        config = uvicorn.Config(
            create_app(ledger=self._ledger),
            loop="asyncio",
            lifespan="on",
            log_config=None,
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        server, thread = self._server, self._thread
        wait_until(
            lambda: server.started or not thread.is_alive(),
            timeout=60,
            message="the threaded server did not start",
        )
        if not server.started:
            self.stop()
            raise RuntimeError("the threaded server did not start")

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(30)
            assert not self._thread.is_alive(), "the threaded server did not stop"
        if self._ledger is not None:
            self._ledger.close()
        self._server = self._thread = self._ledger = None


@contextmanager
def threaded_server(settings: Settings) -> Iterator[ThreadedServer]:
    """Principals as :func:`add_principals` makes them; the server runs until the block ends."""
    server = ThreadedServer(settings, add_principals(settings))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- a real process -------------------------------------------------------------------------


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
            time.sleep(0.05)
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
    """A server (not started) with one principal per role plus a revoked auditor."""
    server = LiveServer(settings, free_port(), log=tmp_path / "server.log", workers=workers)
    server.tokens.update(add_principals(settings))
    return server


def module_live_server(name: str = "server") -> Any:
    """A module-scoped fixture named ``name``: one started real server per backend."""

    @pytest.fixture(scope="module", name=name, params=BACKENDS)
    def _server(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[LiveServer]:
        backend = str(request.param)
        tmp = tmp_path_factory.mktemp(f"live-{backend}")
        with fresh_settings(backend, request, tmp) as (settings, _):
            server = make_server(settings, tmp)
            server.start()
            try:
                yield server
            finally:
                server.stop()

    return _server
