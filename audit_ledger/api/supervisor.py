"""The supervisor of ``audit-ledger serve --workers N``: start, watch and restart the workers.

Not uvicorn's ``--workers``: there all workers accept from one shared socket, and whichever
wakes first takes a whole burst of connections — with keep-alive clients one worker ended up
serving everything while the other idled. With a socket each, the kernel spreads new
connections over the workers. The sockets are bound before any worker starts (by
:mod:`audit_ledger.api.server`), so connections spread from the first one on (a worker still
starting finds its share waiting in its backlog), and a restarted worker takes over its
predecessor's socket and backlog. SIGTERM/SIGINT stop them all. A supervisor killed outright
(SIGKILL) stops none: the workers then get SIGTERM from the kernel (see
:mod:`audit_ledger.parent_death`) and shut down as if it had sent it.

A worker that dies is restarted, after a backoff that doubles with each death in a row
(:data:`BACKOFF_FIRST_SECONDS` … :data:`BACKOFF_MAX_SECONDS`). Before issue #12 any worker that
died within 10 s of its start stopped the whole service (exit 2) — an OOM kill during start-up
was taken for a configuration error. Now the supervisor gives up only on a *persistent* failure,
saying which: a worker slot that failed to become ready :data:`MAX_START_FAILURES` times in a row
(it exited, or it was not ready within :data:`READY_TIMEOUT_SECONDS` and was killed), or
:data:`MAX_DEATHS` deaths of ready workers within :data:`DEATH_WINDOW_SECONDS` (a crash loop).
A dead worker's live metric gauges are dropped (:mod:`audit_ledger.observability.multiproc`).
"Ready" is the worker's own word: it writes one byte to a pipe once uvicorn has started (the
application's start-up, key check included, done).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from audit_ledger.errors import ConfigError
from audit_ledger.observability.multiproc import worker_exited
from audit_ledger.parent_death import child_environment

BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 15.0
MAX_START_FAILURES = 3
READY_TIMEOUT_SECONDS = 90.0
MAX_DEATHS = 5
DEATH_WINDOW_SECONDS = 60.0
POLL_SECONDS = 0.2
READY_BYTE = b"r"


@dataclass
class _Slot:
    """One worker position: its socket, its current process and its history."""

    index: int
    sock: socket.socket
    child: subprocess.Popen[bytes] | None = None
    ready_pipe: int | None = None  # read end; the worker writes READY_BYTE into the other
    started_at: float = 0.0
    ready: bool = False
    start_failures: int = 0  # in a row, without becoming ready in between
    restart_at: float = 0.0
    deaths: deque[float] = field(default_factory=deque)


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _say(line: str) -> None:
    sys.stderr.write(f"audit-ledger: {line}\n")
    sys.stderr.flush()


class Supervisor:
    """Runs one worker per socket until SIGTERM/SIGINT, or a persistent failure (ConfigError)."""

    def __init__(self, command: list[str], sockets: list[socket.socket]) -> None:
        #: the worker's argv before the two fds (listening socket, readiness pipe)
        self.command = command
        self.slots = [_Slot(i, sock) for i, sock in enumerate(sockets)]
        self.stopping = False
        self._signalled: set[int] = set()

    # -- processes ---------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        # A worker gets SIGTERM when the thread that started it exits (PR_SET_PDEATHSIG is
        # per thread). Every worker, restarts included, is started here on the main thread —
        # the only one that may install the signal handlers, so run() always runs on it — and
        # the main thread lives as long as this process.
        read_end, write_end = os.pipe()
        fd = slot.sock.fileno()
        try:
            slot.child = subprocess.Popen(  # noqa: S603 - this interpreter, our own module
                [*self.command, str(fd), str(write_end)],
                pass_fds=(fd, write_end),
                env=child_environment(),
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        os.set_blocking(read_end, False)
        slot.ready_pipe = read_end
        slot.started_at = time.monotonic()
        slot.ready = False

    def _close_pipe(self, slot: _Slot) -> None:
        if slot.ready_pipe is not None:
            os.close(slot.ready_pipe)
            slot.ready_pipe = None

    def _poll_ready(self, slot: _Slot) -> None:
        if slot.ready or slot.ready_pipe is None:
            return
        try:
            data = os.read(slot.ready_pipe, 16)
        except BlockingIOError:
            return
        if READY_BYTE in data:
            slot.ready = True
            slot.start_failures = 0
        self._close_pipe(slot)  # the byte, or EOF (the worker died before it was ready)

    def stop(self, _signum: int = signal.SIGTERM, _frame: object = None) -> None:
        self.stopping = True
        for slot in self.slots:
            child = slot.child
            if child is not None and child.pid not in self._signalled:
                self._signalled.add(child.pid)
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)

    def _wait_all(self, timeout: float) -> None:
        for slot in self.slots:
            if slot.child is None:
                continue
            try:
                slot.child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                slot.child.kill()
                slot.child.wait()
            self._close_pipe(slot)

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        # Handlers first: a stop request that arrives while workers start must still reach them.
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in self.slots:
                if not self.stopping:
                    self._start(slot)
            while not self.stopping:
                time.sleep(POLL_SECONDS)
                for slot in self.slots:
                    if self.stopping:
                        break
                    self._tend(slot, time.monotonic())
            # Again, for a worker whose start was under way when the stop request came.
            self.stop()
            self._wait_all(timeout=30)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _tend(self, slot: _Slot, now: float) -> None:
        child = slot.child
        if child is None:
            if now >= slot.restart_at:
                self._start(slot)
            return
        self._poll_ready(slot)
        code = child.poll()
        if code is None:
            if not slot.ready and now - slot.started_at > READY_TIMEOUT_SECONDS:
                _say(
                    f"server worker {slot.index} (pid {child.pid}) not ready after "
                    f"{READY_TIMEOUT_SECONDS:.0f} s; killing it"
                )
                child.kill()  # seen as a failed start on the next round
            return
        self._close_pipe(slot)
        slot.child = None
        worker_exited(child.pid)  # its live metric gauges go with it
        how = _describe_exit(code)
        if slot.ready:
            slot.deaths.append(now)
            while slot.deaths and now - slot.deaths[0] > DEATH_WINDOW_SECONDS:
                slot.deaths.popleft()
            in_a_row = len(slot.deaths)
            if in_a_row >= MAX_DEATHS:
                self._give_up(
                    f"server worker {slot.index} died {in_a_row} times within "
                    f"{DEATH_WINDOW_SECONDS:.0f} s (last: {how}); giving up"
                )
        else:
            slot.start_failures += 1
            in_a_row = slot.start_failures
            if in_a_row >= MAX_START_FAILURES:
                self._give_up(
                    f"server worker {slot.index} failed to start {in_a_row} times in a row "
                    f"(last: {how}); giving up — see the worker's error above"
                )
        delay = min(BACKOFF_FIRST_SECONDS * 2 ** (in_a_row - 1), BACKOFF_MAX_SECONDS)
        slot.restart_at = now + delay
        state = "after it was ready" if slot.ready else "before it was ready"
        _say(
            f"server worker {slot.index} (pid {child.pid}) {how} {state}; "
            f"restarting it in {delay:.1f} s"
        )

    def _give_up(self, reason: str) -> None:
        self.stop()
        self._wait_all(timeout=30)
        raise ConfigError(reason)
