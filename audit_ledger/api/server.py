"""``audit-ledger serve``: prepare the database and keys, then run uvicorn.

On the embedded default (a SQLite file) a first start migrates the file and creates development
keys, warning loudly; anywhere else (PostgreSQL) the service refuses to start on an unmigrated
database or missing keys, with one clear line — production keys are made deliberately.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import uvicorn

from audit_ledger.api.app import PER_PROCESS_LOGS_ENV
from audit_ledger.errors import ConfigError
from audit_ledger.ledger.admin import create_keys, have_keys, upgrade_database
from audit_ledger.ledger.service import Ledger
from audit_ledger.observability.metrics import prepare_multiprocess
from audit_ledger.parent_death import child_environment, die_with_parent
from audit_ledger.settings import Settings

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


def _uvicorn_config(host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        "audit_ledger.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        http="httptools",  # a dependency: the C parser, several times faster than h11
        proxy_headers=False,
        server_header=False,
        log_level="info",
        access_log=False,  # uvicorn's access lines carry query strings; ours do not
    )


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    prepare(settings)
    if workers <= 1:
        uvicorn.Server(_uvicorn_config(host, port)).run()
        return
    # Workers inherit these: shared metric files, one set of log files per worker.
    prepare_multiprocess(workers)
    os.environ[PER_PROCESS_LOGS_ENV] = "1"
    _supervise(host, port, workers)


#: A worker that exits sooner than this after its start failed to start: not restarted.
WORKER_START_GRACE_SECONDS = 10.0


def _supervise(host: str, port: int, workers: int) -> None:
    """Run ``workers`` server processes, each accepting on its own SO_REUSEPORT socket.

    Not uvicorn's ``--workers``: there all workers accept from one shared socket, and whichever
    wakes first takes a whole burst of connections — with keep-alive clients one worker ended up
    serving everything while the other idled. With a socket each, the kernel spreads new
    connections over the workers. The sockets are bound here, before any worker starts, so
    connections spread from the first one on (a worker still starting finds its share waiting
    in its backlog), and a restarted worker takes over its predecessor's socket and backlog.
    A worker that dies is restarted; SIGTERM/SIGINT stop them all. A supervisor killed outright
    (SIGKILL) stops none: the workers then get SIGTERM from the kernel (see
    :mod:`audit_ledger.parent_death`) and shut down as if it had sent it.
    """
    sockets = [_listening_socket(host, port) for _ in range(workers)]
    stopping = False
    started: dict[int, float] = {}

    def start(index: int) -> subprocess.Popen[bytes]:
        # A worker gets SIGTERM when the thread that started it exits (PR_SET_PDEATHSIG is
        # per thread). Every worker, restarts included, is started here on the main thread —
        # the only one that may install the signal handlers above, so _supervise always runs
        # on it — and the main thread lives as long as this process.
        fd = sockets[index].fileno()
        child = subprocess.Popen(  # noqa: S603 - this interpreter, our own module
            [sys.executable, "-m", __name__, host, str(port), str(fd)],
            pass_fds=(fd,),
            env=child_environment(),
        )
        started[child.pid] = time.monotonic()
        return child

    signalled: set[int] = set()

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.pid not in signalled:
                signalled.add(child.pid)
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)

    children: list[subprocess.Popen[bytes]] = []
    # Handlers first: a stop request that arrives while workers start must still reach them.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(workers):
            if not stopping:
                children.append(start(index))
        while not stopping:
            time.sleep(0.5)
            for index, child in enumerate(children):
                if child.poll() is None or stopping:
                    continue
                if time.monotonic() - started[child.pid] < WORKER_START_GRACE_SECONDS:
                    # It could not even start (bad configuration): restarting would only
                    # repeat that. Stop the others and report it.
                    stop(signal.SIGTERM, None)
                    for other in children:
                        other.wait()
                    code = child.returncode
                    raise ConfigError(f"a server worker exited during start-up ({code})")
                children[index] = start(index)
        # Again, for a worker whose start was under way when the stop request came.
        stop(signal.SIGTERM, None)
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
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


def _serve_worker(host: str, port: int, fd: int) -> None:
    """One supervised worker, accepting on the socket its supervisor bound for it; stops
    (uvicorn's graceful shutdown on SIGTERM) when the supervisor dies."""
    die_with_parent()  # before uvicorn's handlers: SIGTERM until then simply ends the process
    sock = socket.socket(fileno=fd)
    uvicorn.Server(_uvicorn_config(host, port)).run(sockets=[sock])


if __name__ == "__main__":
    _serve_worker(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
