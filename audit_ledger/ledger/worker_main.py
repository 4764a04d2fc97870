"""Inside a worker process of a :class:`~audit_ledger.ledger.workers.WorkerPool`.

``python -m audit_ledger.ledger.worker_main`` reads one set-up message naming its job (checking
ranges of entries for verify, or validating lines for a bulk import), then answers tasks in
order until its stdin ends. Kept apart from the pool so that the pool's users (verify, import)
and the jobs they run do not import each other.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import IO, Any

from audit_ledger.errors import AuditLedgerError, DatabaseUnavailableError, StorageError
from audit_ledger.ledger.worker_pipe import receive, send
from audit_ledger.parent_death import die_with_parent

# Each job imports its own modules (PLC0415), not the other job's: workers start alongside the
# process that needs them, on the same cores, and what they import delays it (issue #16).


def _verify_job(setup: dict[str, Any]) -> tuple[Callable[[Any], Any], Callable[[], None]]:
    """Check ranges ``(lo, hi)`` of entries (see :func:`check_range`)."""
    from audit_ledger.ledger.verify_entries import check_range  # noqa: PLC0415
    from audit_ledger.storage.engine import create_engine_for_url  # noqa: PLC0415
    from audit_ledger.storage.store import Store  # noqa: PLC0415

    store = Store(create_engine_for_url(setup["database_url"]))
    return (lambda task: check_range(store, *task)), store.dispose


def _prepare_job(setup: dict[str, Any]) -> tuple[Callable[[Any], Any], Callable[[], None]]:
    """Validate numbered JSON lines (see :func:`prepare_lines`)."""
    from audit_ledger.crypto.keys import load_keys  # noqa: PLC0415
    from audit_ledger.ledger.appends.prepare import prepare_lines  # noqa: PLC0415
    from audit_ledger.policy import load_policy  # noqa: PLC0415

    policy = load_policy(setup["policy_file"])
    indexer = load_keys(setup["keys_dir"], setup["origin"]).indexer
    limit = setup["max_data_bytes"]
    return (lambda task: prepare_lines(task, policy, indexer, max_data_bytes=limit)), _nothing


def _nothing() -> None:
    return None


JOBS = {"verify": _verify_job, "prepare": _prepare_job}


def stop_on_signal(_signum: int, _frame: object) -> None:
    """SIGTERM (the parent died): unwind from wherever the worker is — a task, a query
    (psycopg cancels it in the server), a read — running the ``finally`` that closes the
    database connections, and exit quietly: a requested stop, no traceback."""
    raise SystemExit(0)


def main() -> None:
    """Worker loop of a started process: read the set-up from stdin, then answer each task."""
    # First: a parent dying right after takes this path.
    signal.signal(signal.SIGTERM, stop_on_signal)
    die_with_parent()
    source = sys.stdin.buffer
    try:
        job, setup = receive(source)
    except EOFError:
        return
    serve(job, setup, source, sys.stdout.buffer)


def serve(job: str, setup: dict[str, Any], source: IO[bytes], out: IO[bytes]) -> None:
    """Answer each task read from ``source`` on ``out``, in order, until ``source`` ends (the
    loop of a started worker and of a forked one alike; SIGTERM is already handled)."""
    try:
        handle, cleanup = JOBS[job](setup)
    except AuditLedgerError as exc:  # e.g. a missing key file: every task gets the error
        message = str(exc)

        def refuse(task: Any) -> Any:
            raise StorageError(message)

        handle, cleanup = refuse, _nothing
    try:
        while True:
            try:
                task = receive(source)
            except EOFError:
                return
            try:
                send(out, ("ok", handle(task)))
            except DatabaseUnavailableError as exc:
                send(out, ("unavailable", str(exc)))
            except AuditLedgerError as exc:
                send(out, ("error", str(exc)))
    except BrokenPipeError:
        pass  # the parent stopped reading: it found a problem or was interrupted
    finally:
        cleanup()


if __name__ == "__main__":
    main()
    # Everything is done: answers are flushed as they are sent and cleanup() closed the
    # database connections. Skipping the interpreter's teardown (a tenth of a second of module
    # clean-up) lets the pool that waits for this exit, and so every ``verify`` and ``append``,
    # finish that much sooner.
    os._exit(0)
