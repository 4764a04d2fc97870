"""Metrics of ``serve --workers N``: prometheus-client's multiprocess mode, run by the supervisor.

Each worker is its own process with its own counters; a scrape is answered by whichever worker
the kernel hands the connection to. So the supervisor gives its workers a shared directory
(``PROMETHEUS_MULTIPROC_DIR``), where prometheus-client keeps every worker's values in files,
and the answering worker reports them all: counters and histograms summed over the workers
(the dead ones' included, so totals never go back), gauges by the mode each one declares
(``liveall``: a series per live worker, ``pid`` label; ``livesum``: the live workers' sum).

The directory is the supervisor's alone: made fresh and private (0700) under the system's
temporary directory at start (``TMPDIR`` moves it), removed when it stops, and an inherited
``PROMETHEUS_MULTIPROC_DIR`` is never written to or cleaned — it could be shared, or ``.``
with the SQLite ledger and its keys in it. Directories left by a supervisor that was killed
outright are removed at the next start. When a worker dies, its live gauges are dropped
(``mark_process_dead``): a restarted worker must not leave its predecessor's pool counts behind.

prometheus-client's process collector reads only its own process, and in multiprocess mode
would report the answering worker alone; :class:`WorkerProcessCollector` reads ``/proc`` for
every live worker instead (CPU, memory, descriptors, start time), each with a ``pid`` label.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector, multiprocess
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: ``<tmp>/audit-ledger-metrics-<supervisor pid>-<random>``
DIRECTORY_PREFIX = "audit-ledger-metrics-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _writers_alive(directory: Path) -> bool:
    """Whether a process that writes metric files here (``<kind>_<pid>.db``) still runs."""
    for path in directory.glob("*.db"):
        pid_text = path.stem.rsplit("_", 1)[-1]
        if pid_text.isdigit() and _alive(int(pid_text)):
            return True
    return False


def _remove_stale(parent: Path) -> None:
    """Directories of this user's supervisors that are gone (killed before they cleaned up) and
    whose workers are gone too: a supervisor killed outright leaves its workers shutting down
    (they get SIGTERM from the kernel), and a worker that writes its first value of a metric
    while it stops would fail on a directory removed under it."""
    for path in parent.glob(DIRECTORY_PREFIX + "*"):
        pid_text = path.name.removeprefix(DIRECTORY_PREFIX).split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)) or _writers_alive(path):
            continue
        with contextlib.suppress(OSError):
            info = path.lstat()
            if path.is_dir() and not path.is_symlink() and info.st_uid == os.geteuid():
                shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def worker_metrics_directory() -> Iterator[Path]:
    """For the supervisor, around its workers' lifetime: a fresh private directory in
    ``PROMETHEUS_MULTIPROC_DIR`` (the workers inherit it), removed afterwards."""
    parent = Path(tempfile.gettempdir())
    _remove_stale(parent)
    directory = Path(tempfile.mkdtemp(prefix=f"{DIRECTORY_PREFIX}{os.getpid()}-", dir=parent))
    inherited = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = str(directory)
    try:
        yield directory
    finally:
        if inherited is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = inherited
        shutil.rmtree(directory, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """The supervisor reaped worker ``pid``: drop its live gauges (its counters stay summed)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _parent_of(pid: int) -> int | None:
    """The parent of live process ``pid`` (None when it is gone, or dead and not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # "pid (comm) state ppid …": comm may hold spaces and parentheses; the last ")" ends it.
    state, ppid = stat.rsplit(b")", 1)[1].split()[:2]
    return None if state in (b"Z", b"X") else int(ppid)


def live_workers(directory: Path) -> list[int]:
    """This process and its live siblings (same parent: the supervisor) that write metric
    files here — every worker does from its start (its counters' files)."""
    me, parent = os.getpid(), os.getppid()
    pids = {me}
    for path in directory.glob("*.db"):
        pid_text = path.stem.rsplit("_", 1)[-1]
        if pid_text.isdigit() and int(pid_text) != me and _parent_of(int(pid_text)) == parent:
            pids.add(int(pid_text))
    return sorted(pids)


class WorkerProcessCollector(Collector):
    """``process_*`` of every live worker, one series each (``pid`` label), read from /proc."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for pid in live_workers(self.directory):
            reader = ProcessCollector(pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]
            for family in reader.collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from families.values()


def worker_registry(directory: str) -> CollectorRegistry:
    """What a worker's ``/metrics`` reports besides the ledger's state: every worker's values."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
    registry.register(WorkerProcessCollector(Path(directory)))
    return registry
