"""``audit-ledger serve``: prepare the database and keys, then run uvicorn.

On the embedded default (a SQLite file) a first start migrates the file and creates development
keys, warning loudly; anywhere else (PostgreSQL) the service refuses to start on an unmigrated
database or missing keys, with one clear line — production keys are made deliberately.
"""

from __future__ import annotations

import os
import socket
import sys

import uvicorn

from audit_ledger.api.app import PER_PROCESS_LOGS_ENV
from audit_ledger.api.protocol import HttpLimits, connection_cap, protocol
from audit_ledger.api.supervisor import READY_BYTE, Supervisor
from audit_ledger.errors import ConfigError
from audit_ledger.ledger.admin import create_keys, have_keys, upgrade_database
from audit_ledger.ledger.service import Ledger
from audit_ledger.observability.multiproc import worker_metrics_directory
from audit_ledger.parent_death import die_with_parent
from audit_ledger.settings import Settings, load_settings

DEV_KEYS_WARNING = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! DEVELOPMENT KEYS CREATED in {keys_dir}
!! They encrypt every payload and sign every checkpoint. Fine for trying the service out;
!! for production create keys deliberately (audit-ledger keys init), back them up outside
!! the database, and publish the verifier key below to your auditors:
!!   {verifier}
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


def is_embedded(settings: Settings) -> bool:
    return settings.database_url.startswith("sqlite")


def prepare(settings: Settings) -> None:
    """Make the embedded default ready to serve, or check that a server database is."""
    if is_embedded(settings):
        if not have_keys(settings.keys_dir):
            verifier = create_keys(settings.keys_dir, settings.checkpoint_origin)
            sys.stderr.write(
                DEV_KEYS_WARNING.format(keys_dir=settings.keys_dir, verifier=verifier.encode())
            )
        upgrade_database(settings.database_url)
    ledger = Ledger.open(settings)  # raises ConfigError for missing or bad keys
    try:
        ledger.check_schema()  # raises ConfigError for an unmigrated database
        ledger.key_check.run()  # raises ConfigError for a KEK that unwraps no live key
    finally:
        ledger.close()


def http_limits(settings: Settings) -> HttpLimits:
    return HttpLimits(
        max_head_bytes=settings.http_max_head_bytes,
        max_headers=settings.http_max_headers,
        head_timeout=settings.http_head_timeout_seconds,
        body_idle_timeout=settings.http_body_idle_timeout_seconds,
        body_timeout=settings.http_body_timeout_seconds,
        max_connections=connection_cap(settings.http_max_connections),
    )


def _uvicorn_config(host: str, port: int, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        "audit_ledger.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        # httptools (llhttp, a dependency): the C parser, several times faster than h11; with
        # the head, time and connection limits it lacks added (api/protocol.py, issue #12).
        http=protocol(http_limits(settings)),
        proxy_headers=False,
        server_header=False,
        log_level="info",
        access_log=False,  # uvicorn's access lines carry query strings; ours do not
    )


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    prepare(settings)
    if workers <= 1:
        uvicorn.Server(_uvicorn_config(host, port, settings)).run()
        return
    # Workers inherit these: a private directory for their metric files, one set of log files
    # per worker.
    with worker_metrics_directory():
        os.environ[PER_PROCESS_LOGS_ENV] = "1"
        _supervise(host, port, workers)


def _supervise(host: str, port: int, workers: int) -> None:
    """Run ``workers`` server processes, each accepting on its own SO_REUSEPORT socket bound
    here; :mod:`audit_ledger.api.supervisor` says why, and how deaths are handled."""
    sockets = [_listening_socket(host, port) for _ in range(workers)]
    try:
        Supervisor([sys.executable, "-m", __name__, host, str(port)], sockets).run()
    finally:
        for sock in sockets:
            sock.close()


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


class _ReadyServer(uvicorn.Server):
    """uvicorn, telling its supervisor once it has started (the app's start-up done)."""

    def __init__(self, config: uvicorn.Config, ready_fd: int) -> None:
        super().__init__(config)
        self._ready_fd = ready_fd

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            try:
                os.write(self._ready_fd, READY_BYTE)
            except BrokenPipeError:
                # The supervisor died while this worker started: nobody to tell. Its SIGTERM
                # (parent death) stops this worker gracefully; a traceback would be noise.
                pass
            finally:
                os.close(self._ready_fd)


def _serve_worker(host: str, port: int, fd: int, ready_fd: int) -> None:
    """One supervised worker, accepting on the socket its supervisor bound for it; stops
    (uvicorn's graceful shutdown on SIGTERM) when the supervisor dies."""
    die_with_parent()  # before uvicorn's handlers: SIGTERM until then simply ends the process
    sock = socket.socket(fileno=fd)
    config = _uvicorn_config(host, port, load_settings())  # the supervisor's environment
    _ReadyServer(config, ready_fd).run(sockets=[sock])


if __name__ == "__main__":
    _serve_worker(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
