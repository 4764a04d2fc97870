"""Worker processes started by the test process, read from ``/proc`` (no psutil, no ``pgrep``
child), and guards for code that drives worker processes through pipes."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


WORKER_MODULE = b"audit_ledger.ledger.worker_main"
#: What a forked worker calls itself (``/proc/<pid>/comm``; its command line is its parent's).
FORKED_NAME = "ledger-worker"


def child_pids(parent: int | None = None) -> list[int]:
    """Worker processes (``python -m audit_ledger.ledger.worker_main``, or forked and named
    :data:`FORKED_NAME`) whose parent is ``parent``
    (default: this process) — zombies of Python processes included: a worker that exited but
    was never waited for is left behind too. Other children (a server another test keeps
    running) are not counted."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) != parent:
            continue
        if (
            WORKER_MODULE in cmdline
            or comm == FORKED_NAME
            or (state == "Z" and comm.startswith(("python", "pytest", "audit-ledger")))
        ):
            found.append(int(entry.name))
    return sorted(found)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after ``comm`` (state, ppid, ...); None if it is gone."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return stat.rsplit(")", 1)[1].split()


def children_of(parent: int) -> list[int]:
    """Live (not zombie) child processes of ``parent``, any command: read from each process's
    ``/proc/<pid>/stat`` (``/proc/<pid>/task/*/children`` is not on every kernel)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and int(fields[1]) == parent and fields[0] not in "ZX":
            found.append(int(entry.name))
    return sorted(found)


def process_age(pid: int) -> float | None:
    """Seconds since ``pid`` started (clock-tick precision), or None if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # Field 22 of stat (starttime, clock ticks after boot) is the 20th after comm.
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started


def processes_with_args(*args: str) -> list[int]:
    """Live processes whose command line contains ``args`` as consecutive arguments (e.g.
    ``"-m", "audit_ledger.api.server", "127.0.0.1", "8123"``), whoever their parent is."""
    needle = b"\0" + b"\0".join(a.encode() for a in args) + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = _stat_fields(int(entry.name))
        if needle in b"\0" + cmdline and fields is not None and fields[0] not in "ZX":
            found.append(int(entry.name))
    return sorted(found)


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs: neither gone nor a zombie (an orphan that exited waits for init
    to reap it, and not every container's init does)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in "ZX"


def alive_after(pids: Iterable[int], timeout: float) -> list[int]:
    """Those of ``pids`` still alive once all have exited or ``timeout`` seconds have passed."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if is_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (one of its ``/proc/<pid>/fd`` links)."""
    try:
        fds = list((Path("/proc") / str(pid) / "fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with suppress(OSError):
            if fd.readlink() == path:
                return True
    return False


#: Bound on how long worker processes may take to notice that their parent died and stop.
#: Generous (a loaded machine): it is there to end the wait, not to measure anything.
ORPHAN_TIMEOUT = 15.0

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def pool_owner(
    config: Path,
    job: str,
    setup: dict[str, Any],
    tasks: list[Any],
    jobs: int = 2,
    *,
    fork: bool = False,
) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """A separate process owning a :class:`WorkerPool` that maps ``tasks``
    (``python -m tests.integration.workers pool``), and the pids of its workers. Afterwards the
    owner is killed if it still runs, and so is any of its workers still alive. ``fork``: the
    pool forks its workers instead of starting them."""
    cfg = {"job": job, "setup": setup, "jobs": jobs, "tasks": tasks, "fork": fork}
    config.write_text(json.dumps(cfg, default=str))
    owner = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.workers", "pool", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    workers: list[int] = []
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()  # "" if it failed to start (its stderr is the test's)
        assert line.startswith("workers "), (line, owner.poll())
        workers = [int(pid) for pid in line.split()[1:]]
        assert len(workers) == jobs, line
        yield owner, workers
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
        for pid in workers:
            if is_alive(pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def kill_children() -> list[int]:
    """SIGKILL the worker processes of this process; returns their PIDs."""
    pids = child_pids()
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def within(seconds: float, fn: Callable[[], T]) -> T:
    """``fn()`` in a thread; if it has not returned after ``seconds`` (say, both ends of a
    pipe blocked writing), kill this process's workers — which unblocks the pipes — and fail.
    The result or exception of ``fn`` otherwise."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        kill_children()
        thread.join(30)
        pytest.fail(f"still blocked after {seconds}s (worker processes killed to unblock it)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


@contextmanager
def unraisable_recorded() -> Iterator[list[str]]:
    """Record (instead of reporting) the exceptions Python ignores while finalising objects
    in the block — e.g. in an abandoned generator's ``finally`` — collecting garbage at its
    end so that they happen inside it."""
    seen: list[str] = []
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        seen.append(f"{unraisable.exc_type.__name__}: {unraisable.exc_value} ({unraisable.object})")

    sys.unraisablehook = hook
    try:
        yield seen
        gc.collect()
    finally:
        sys.unraisablehook = previous


@contextmanager
def another_thread() -> Iterator[None]:
    """Another thread running in this process for the duration (it waits on an event): what
    makes a :class:`WorkerPool` start its workers instead of forking them, as in the service."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
