"""Worker processes started by the test process, read from ``/proc`` (no psutil, no ``pgrep``
child), and guards for code that drives worker processes through pipes."""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


WORKER_MODULE = b"audit_ledger.ledger.workers"


def child_pids(parent: int | None = None) -> list[int]:
    """Worker processes (``python -m audit_ledger.ledger.workers``) whose parent is ``parent``
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
        if WORKER_MODULE in cmdline or (state == "Z" and comm.startswith("python")):
            found.append(int(entry.name))
    return sorted(found)


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
