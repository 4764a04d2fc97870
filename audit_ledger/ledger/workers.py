"""Worker processes for the CPU-bound halves of ``verify`` and bulk import.

A :class:`WorkerPool` runs ``jobs`` workers. Each reads one set-up message (which job it does and
what it needs: a database URL, key and policy locations — never on a command line other users
can read), then answers tasks one by one; messages are length-prefixed pickles, exchanged only
between this process and the workers it started.

Two ways to start them:

* **forked** from this process, when that is safe: on Linux, with a single thread running and no
  database connection open (the caller closes its pooled connections, see ``release``; on
  PostgreSQL only, see :meth:`~audit_ledger.storage.database.Database.release_connections`). A
  forked worker has every module this process imported already: it starts in milliseconds,
  where a started interpreter spends ~0.4 s importing SQLAlchemy and the rest (issue #16) — on
  a 100k-entry verify, about a third of the CPU time. It never touches what it inherited (it
  freezes the garbage collector over the parent's objects and leaves with ``os._exit``), so no
  finaliser of the parent's runs in it.
* **started** as ``python -m audit_ledger.ledger.worker_main`` otherwise: in a process with
  other threads (the service: a thread might hold a lock across the fork, and the child would
  wait on it forever), with a connection in use, or off Linux. Plain subprocesses rather than
  ``multiprocessing``: spawning through multiprocessing re-imports the caller's ``__main__``,
  which breaks any script without a ``__main__`` guard.

Tasks go to the workers round-robin and each worker answers in order, so reading the answers
round-robin gives them in task order; at most :data:`AHEAD` tasks per worker are in flight,
which bounds memory however long the input is.

The workers do not outlive the process that started them: an idle worker sees its stdin end,
and a busy one (a long task, a query waiting on a lock) gets SIGTERM from the kernel when that
process dies (:mod:`audit_ledger.parent_death`) and stops at once, closing its connections.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn, Protocol

import audit_ledger
from audit_ledger.errors import DatabaseUnavailableError, StorageError
from audit_ledger.ledger.worker_pipe import receive, send
from audit_ledger.parent_death import child_environment, die_with

#: Tasks queued per worker ahead of the one being consumed.
AHEAD = 2

#: The module each worker process runs (its ``main``).
WORKER_MODULE = "audit_ledger.ledger.worker_main"

#: The name a forked worker gives itself (``/proc/<pid>/comm``; its command line is its
#: parent's): what ``ps`` and the tests know it by.
FORKED_NAME = b"ledger-worker"


class WorkerPool:
    """``jobs`` worker processes doing ``job`` (a key of :data:`JOBS`) with ``setup``.

    The workers get SIGTERM when the *thread* that created the pool exits (PR_SET_PDEATHSIG
    follows the thread that started a child, see :mod:`audit_ledger.parent_death`): create a
    pool in the thread that closes it, or in one that outlives it. Every caller does — ``with
    WorkerPool(...)`` or ``try``/``finally: pool.close()`` around its use in one function —
    and the pool's own feeder threads never start a process.
    """

    def __init__(
        self,
        job: str,
        setup: dict[str, Any],
        jobs: int,
        *,
        release: Callable[[], bool] | None = None,
    ) -> None:
        """``release``: closes the caller's idle database connections so that the workers can
        be forked (True), or says one is in use (False); without it they are started."""
        self.workers: list[Worker]
        if _may_fork() and release is not None and release():
            self.workers = [_fork(job, setup) for _ in range(jobs)]
            self.forked = True
        else:
            self.workers = [_start() for _ in range(jobs)]
            self.forked = False
        # One feeder thread per worker writes its tasks: if this thread wrote them itself, it
        # could block on a full stdin pipe while that worker blocks on a full stdout pipe that
        # only this thread reads — a deadlock as soon as tasks and answers are large.
        self.queues: list[queue.SimpleQueue[object]] = [queue.SimpleQueue() for _ in self.workers]
        self.feeders = [
            threading.Thread(target=_feed, args=(w, q), daemon=True, name="worker-feeder")
            for w, q in zip(self.workers, self.queues, strict=True)
        ]
        for feeder, q in zip(self.feeders, self.queues, strict=True):
            if not self.forked:  # a forked worker has its set-up already
                q.put((job, setup))
            feeder.start()
        self.closed = False

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers promptly, even those blocked writing answers no one will read."""
        if self.closed:
            return
        self.closed = True
        for q in self.queues:
            q.put(_END)  # the feeder closes the worker's stdin: an idle worker exits
        for worker in self.workers:
            # A worker blocked writing an unread answer gets EPIPE and exits.
            _pipe(worker.stdout).close()
        for worker in self.workers:
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck worker
                worker.kill()
                worker.wait()
        for feeder in self.feeders:
            feeder.join(timeout=10)

    def map(self, tasks: Iterable[Any]) -> Iterator[Any]:
        """Results of ``tasks`` in order; tasks are drawn only as workers have room, so an
        endless iterable is fine as long as the caller stops consuming."""
        pending: deque[int] = deque()  # worker index of each task in flight, in task order
        source = iter(tasks)
        turn, exhausted = 0, False
        try:
            while True:
                while not exhausted and len(pending) < AHEAD * len(self.workers):
                    task = next(source, _END)
                    if task is _END:
                        exhausted = True
                        break
                    self.queues[turn].put(task)
                    pending.append(turn)
                    turn = (turn + 1) % len(self.workers)
                if not pending:
                    return
                try:
                    kind, payload = receive(_pipe(self.workers[pending.popleft()].stdout))
                except EOFError:
                    raise StorageError("a worker process exited unexpectedly") from None
                if kind == "unavailable":
                    raise DatabaseUnavailableError(payload)
                if kind == "error":
                    raise StorageError(payload)
                yield payload
        finally:
            # Read (and drop) the answers still in flight, so that the next map() reads its
            # own answers. A dead worker simply has none; a closed pool needs none.
            for index in pending if not self.closed else ():
                with contextlib.suppress(EOFError, OSError, ValueError, pickle.UnpicklingError):
                    receive(_pipe(self.workers[index].stdout))


class Worker(Protocol):
    """What the pool uses of a worker process (a :class:`subprocess.Popen` or a forked one)."""

    pid: int
    returncode: int | None
    stdin: IO[bytes] | None
    stdout: IO[bytes] | None

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


def _start() -> subprocess.Popen[bytes]:
    """A worker started as ``python -m`` :data:`WORKER_MODULE`, its set-up still to send."""
    # The workers import this very package, wherever this process found it.
    package_root = str(Path(audit_ledger.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return subprocess.Popen(  # noqa: S603 - our own module, with this interpreter
        [sys.executable, "-m", WORKER_MODULE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=child_environment(PYTHONPATH=path),
    )


def _may_fork() -> bool:
    """Forking is safe here: Linux (elsewhere fork is unsafe with some system libraries, or
    missing), and no other thread that could hold a lock the child would need."""
    return sys.platform == "linux" and threading.active_count() == 1


class ForkedWorker:
    """A worker forked from this process: the parts of :class:`subprocess.Popen` the pool uses."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdin: IO[bytes] | None = stdin
        self.stdout: IO[bytes] | None = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._reap(os.WNOHANG)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            while self.returncode is None:
                self._reap(0)
            return self.returncode
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
            time.sleep(0.005)
        return code

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def _reap(self, options: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, options)
        except ChildProcessError:
            # Reaped already by someone else (SIGCHLD ignored): its status is lost, and Popen
            # says 0 then too.
            self.returncode = 0
            return
        if pid:
            self.returncode = os.waitstatus_to_exitcode(status)


def _fork(job: str, setup: dict[str, Any]) -> ForkedWorker:
    """Fork a worker for ``job``, connected to this process by two pipes."""
    task_read, task_write = os.pipe()
    answer_read, answer_write = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which leaves through os._exit
        _forked_child(job, setup, (task_read, answer_write), parent)
    os.close(task_read)
    os.close(answer_write)
    return ForkedWorker(pid, os.fdopen(task_write, "wb"), os.fdopen(answer_read, "rb"))


def _forked_child(  # pragma: no cover - runs in the child
    job: str, setup: dict[str, Any], pipe: tuple[int, int], parent: int
) -> NoReturn:
    """The life of a forked worker: serve its job, reading tasks from ``pipe[0]`` and writing
    answers to ``pipe[1]``, then leave without running anything of the parent's (no ``finally``
    up the stack, no ``atexit``, no finaliser)."""
    code = 1
    try:
        from audit_ledger.ledger.worker_main import serve, stop_on_signal  # noqa: PLC0415

        # The parent's objects are never collected here: a finaliser of one of its database
        # connections would otherwise say goodbye to the server on the parent's behalf.
        gc.freeze()
        signal.signal(signal.SIGTERM, stop_on_signal)
        die_with(parent)
        _set_name(FORKED_NAME)
        _void_inherited(keep=pipe)
        with os.fdopen(pipe[0], "rb") as tasks, os.fdopen(pipe[1], "wb") as answers:
            serve(job, setup, tasks, answers)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:  # noqa: BLE001 - the parent sees the worker end, as for a started one
        code = 1
    finally:
        os._exit(code)


def _void_inherited(keep: tuple[int, ...]) -> None:  # pragma: no cover - runs in the child
    """Point every file descriptor but ``keep`` at /dev/null, stdin to stderr included.

    What a started worker gets from ``close_fds`` and ``stderr=DEVNULL``: the parent's pipes
    (another worker's stdin, a server's) no longer held open by this process, nothing written
    to the parent's terminal. The numbers stay taken rather than closed: an object of the
    parent's still naming one (a log file, a connection) must not reach whatever this process
    would open next under the same number.
    """
    null = os.open(os.devnull, os.O_RDWR)
    for entry in list(Path("/proc/self/fd").iterdir()):
        fd = int(entry.name)
        if fd != null and fd not in keep:
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed since
                os.dup2(null, fd)
    os.close(null)


def _set_name(name: bytes) -> None:
    """``prctl(PR_SET_NAME)``: the forked worker's name in ``/proc/<pid>/comm`` and ``ps``."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)  # 15 = PR_SET_NAME


_END = object()


def _feed(worker: Worker, tasks: queue.SimpleQueue[object]) -> None:
    """Write queued messages to the worker until :data:`_END`, then close its stdin."""
    stream = _pipe(worker.stdin)
    try:
        while (message := tasks.get()) is not _END:
            send(stream, message)
    except OSError:
        pass  # the worker died: the reader sees its stdout end and reports it
    finally:
        with contextlib.suppress(OSError):
            stream.close()


def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
    if stream is None:  # pragma: no cover - every worker is started with pipes
        raise StorageError("worker process has no pipe")
    return stream
