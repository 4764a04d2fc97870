"""Worker processes that do not outlive the process that started them.

A parent killed with SIGKILL cannot stop its children, so each child asks the kernel to do it:
on Linux, ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` sends the child SIGTERM as soon as its parent
exits, however it exits, and each kind of worker turns SIGTERM into its normal graceful stop
(uvicorn drains and shuts down; a pool worker ends its task loop and closes its database
connections). Without it, an orphaned server worker kept serving the port and an orphaned pool
worker kept its database connection.

The parent starts the child with :func:`child_environment` (its own pid in
:data:`PARENT_PID_ENV`); the child calls :func:`die_with_parent` first thing. The parent may
die before the child gets that far — a signal requested then would never come — so right after
the request the child compares ``getppid()`` with the pid it was given: a child whose parent is
gone has been reparented (to init or a subreaper) and exits at once.

The signal is tied to the *thread* that started the child, not to the process: Linux counts
the thread that forked as the parent, and when it exits the child is handed to another thread
of the same process — and gets SIGTERM then, although its parent process lives on. (``getppid()``
names the process, so the check above cannot tell.) A parent must therefore start its children
from a thread that outlives them — see the callers.

Elsewhere than on Linux this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: The parent's pid, as the parent saw it, for the child's check (removed from the child's
#: environment again, so that its own children do not take it for theirs).
PARENT_PID_ENV = "AUDIT_LEDGER_PARENT_PID"

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def child_environment(**extra: str) -> dict[str, str]:
    """This process's environment plus ``extra``, for a child that calls
    :func:`die_with_parent`."""
    return {**os.environ, **extra, PARENT_PID_ENV: str(os.getpid())}


def die_with_parent() -> bool:
    """In a child started with :func:`child_environment`: receive SIGTERM when the parent dies.

    Raises :class:`SystemExit` (0) if the parent is already gone. Returns whether the signal
    was requested: False off Linux, or when the child was not started by such a parent (run by
    hand, say).
    """
    expected = os.environ.pop(PARENT_PID_ENV, None)
    if expected is None:
        return False
    return die_with(int(expected))


def die_with(parent: int) -> bool:
    """Receive SIGTERM when process ``parent`` (this process's parent, as it saw its own pid)
    dies: :func:`die_with_parent` for a child that knows that pid otherwise (a forked child
    reads it before the fork). Raises :class:`SystemExit` (0) if it is gone already; False off
    Linux."""
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)  # the C library this interpreter runs on
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    if prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    if os.getppid() != parent:
        # The parent died before the request: no signal will come. Nothing started yet.
        raise SystemExit(0)
    return True
