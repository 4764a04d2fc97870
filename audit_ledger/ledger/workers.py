"""Worker processes for the CPU-bound halves of ``verify`` and bulk import.

A :class:`WorkerPool` runs ``jobs`` copies of ``python -m audit_ledger.ledger.worker_main``. Each
worker reads one set-up message (which job it does and what it needs: a database URL, key and
policy locations — sent over its stdin, never on a command line other users can read), then
answers tasks one by one; messages are length-prefixed pickles, exchanged only between this
process and the workers it started. Plain subprocesses rather than ``multiprocessing``:
spawning through multiprocessing re-imports the caller's ``__main__``, which breaks any script
without a ``__main__`` guard, and forking would share the parent's database connections.

Tasks go to the workers round-robin and each worker answers in order, so reading the answers
round-robin gives them in task order; at most :data:`AHEAD` tasks per worker are in flight,
which bounds memory however long the input is.

The workers do not outlive the process that started them: an idle worker sees its stdin end,
and a busy one (a long task, a query waiting on a lock) gets SIGTERM from the kernel when that
process dies (:mod:`audit_ledger.parent_death`) and stops at once, closing its connections.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import audit_ledger
from audit_ledger.errors import DatabaseUnavailableError, StorageError
from audit_ledger.parent_death import child_environment

#: Tasks queued per worker ahead of the one being consumed.
AHEAD = 2
_LENGTH = struct.Struct(">Q")

#: The module each worker process runs (its ``main``).
WORKER_MODULE = "audit_ledger.ledger.worker_main"


def send(stream: IO[bytes], message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    head = stream.read(_LENGTH.size)
    if len(head) != _LENGTH.size:
        raise EOFError
    return pickle.loads(stream.read(_LENGTH.unpack(head)[0]))  # noqa: S301 - our own worker


class WorkerPool:
    """``jobs`` worker processes doing ``job`` (a key of :data:`JOBS`) with ``setup``.

    The workers get SIGTERM when the *thread* that created the pool exits (PR_SET_PDEATHSIG
    follows the thread that started a child, see :mod:`audit_ledger.parent_death`): create a
    pool in the thread that closes it, or in one that outlives it. Every caller does — ``with
    WorkerPool(...)`` or ``try``/``finally: pool.close()`` around its use in one function —
    and the pool's own feeder threads never start a process.
    """

    def __init__(self, job: str, setup: dict[str, Any], jobs: int) -> None:
        # The workers import this very package, wherever this process found it.
        package_root = str(Path(audit_ledger.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        self.workers = [
            subprocess.Popen(  # noqa: S603 - our own module, with this interpreter
                [sys.executable, "-m", WORKER_MODULE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=child_environment(PYTHONPATH=path),
            )
            for _ in range(jobs)
        ]
        # One feeder thread per worker writes its tasks: if this thread wrote them itself, it
        # could block on a full stdin pipe while that worker blocks on a full stdout pipe that
        # only this thread reads — a deadlock as soon as tasks and answers are large.
        self.queues: list[queue.SimpleQueue[object]] = [queue.SimpleQueue() for _ in self.workers]
        self.feeders = [
            threading.Thread(target=_feed, args=(w, q), daemon=True, name="worker-feeder")
            for w, q in zip(self.workers, self.queues, strict=True)
        ]
        for feeder, q in zip(self.feeders, self.queues, strict=True):
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


_END = object()


def _feed(worker: subprocess.Popen[bytes], tasks: queue.SimpleQueue[object]) -> None:
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
