"""A real PostgreSQL streaming-replication pair for the read-replica tests (issue #16).

The shared server at 127.0.0.1:5432 accepts no replication connections (its pg_hba.conf has no
``replication`` line: "no pg_hba.conf entry for replication connection"), and editing a shared
server's configuration from a test is not ours to do. So the tests start their own pair with
the PostgreSQL 15 binaries on the machine: ``initdb`` a primary (trust auth, replication lines
included by initdb), ``pg_basebackup -R -X stream`` it into a standby, and start both on free
ports, owned and run by the ``postgres`` OS user when the tests run as root (PostgreSQL refuses
to run as root). Both are stopped and removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.servers import free_port

BIN = Path(os.environ.get("AUDIT_LEDGER_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def missing() -> str | None:
    """Why a pair cannot be started here (None when it can)."""
    for tool in ("initdb", "pg_ctl", "pg_basebackup"):
        if not (BIN / tool).exists():
            return f"{BIN / tool} not found (PostgreSQL 15 server binaries)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' OS user to run PostgreSQL as"
    return None


def _as_owner(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _run(args: list[str], timeout: float = 120) -> None:
    done = subprocess.run(
        _as_owner(args), check=False, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout)[-2000:]}")


@dataclass
class Cluster:
    """One running PostgreSQL cluster of the pair."""

    data: Path
    port: int

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        # -l: the server's output goes to a file, not to pipes this process would wait on.
        log = str(self.data.parent / f"{self.data.name}.log")
        _run([str(BIN / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", opts, "-w", "start"])
        self._wait_ready()

    def stop(self, mode: str = "fast") -> None:
        _run([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=3) as conn:
            cursor = conn.execute(sql)
            return list(cursor.fetchall()) if cursor.description else []


@dataclass
class ReplicaPair:
    primary: Cluster
    standby: Cluster

    def wait_replayed(self, timeout: float = 30) -> None:
        """Until the standby has replayed everything the primary has flushed so far."""
        target = self.primary.execute("SELECT pg_current_wal_flush_lsn()::text")[0][0]
        deadline = time.monotonic() + timeout
        while True:
            rows = self.standby.execute(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")
            if rows[0][0]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the standby did not replay the primary's WAL in time")
            time.sleep(0.02)


@contextlib.contextmanager
def replica_pair() -> Iterator[ReplicaPair]:
    """A primary and a streaming hot standby, both started; stopped and removed afterwards."""
    # Not under pytest's tmp_path: its root-only parent directories would lock out 'postgres'.
    root = Path(tempfile.mkdtemp(prefix="audit-ledger-replica-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    primary = Cluster(root / "primary", free_port())
    standby = Cluster(root / "standby", free_port())
    try:
        # -N: test clusters need no fsync at init; trust on local and 127.0.0.1 (replication
        # connections included: initdb writes those lines itself).
        _run([str(BIN / "initdb"), "-D", str(primary.data), "-A", "trust", "-U", "postgres", "-N"])
        with (primary.data / "postgresql.conf").open("a") as conf:
            # fsync off: throwaway clusters; the durability under test is not the server's.
            conf.write("fsync = off\nshared_buffers = 16MB\nwal_level = replica\n")
            conf.write("max_wal_senders = 4\nhot_standby = on\n")
        primary.start()
        _run(
            [
                str(BIN / "pg_basebackup"),
                *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
                *("-D", str(standby.data), "-R", "-X", "stream", "-c", "fast"),
            ]
        )
        standby.start()
        yield ReplicaPair(primary, standby)
    finally:
        for cluster in (standby, primary):
            if cluster.running():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
