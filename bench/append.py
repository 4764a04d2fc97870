"""Storage benchmark (issue: append, store and verify) — one run on PostgreSQL, side by side.

    .venv/bin/python bench/append.py [--events 200000] [--batch 1000] [--memory-sizes 100000,1000000]

Prints, measured in the same run on the same server (the machine is a shared, noisy 2-core box,
so ratios matter more than absolute numbers):

* bulk append of N financial events in batches of B through the real append path (validate,
  blind-index, encrypt, hash, chain, COPY into five tables, commit per batch) vs a raw ``COPY``
  of N rows of the same size into a plain table, also committed per batch;
* full ``verify`` (entries/s) vs a raw ``COPY entries TO STDOUT`` read of the same table;
* peak RSS of ``verify`` in a fresh process at each requested log size (flat = constant memory);
* with ``--end-to-end N``, the whole-process figures of ``bench/end_to_end.py`` (``audit-ledger
  append FILE`` and ``audit-ledger verify`` timed from start to exit, against ``psql`` COPY, a
  PL/pgSQL trigger chain and COPY TO, on a fresh database).

Uses a throwaway database on AUDIT_LEDGER_TEST_PG_URL's server (default
postgresql://postgres@127.0.0.1:5432/postgres) and drops it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audit_ledger.crypto.keys import init_keys  # noqa: E402
from audit_ledger.ledger.service import Ledger  # noqa: E402
from audit_ledger.settings import load_settings  # noqa: E402
from audit_ledger.storage import migrations  # noqa: E402
from audit_ledger.storage.engine import create_engine_for_url  # noqa: E402

ADMIN = os.environ.get("AUDIT_LEDGER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ORIGIN = "bench.example/ledger"


def compile_bytecode(checkout: Path) -> None:
    """Compile ``checkout``'s package to bytecode, as installing a wheel does.

    A checkout installed in editable mode has none, and where ``PYTHONDONTWRITEBYTECODE`` is set
    (this environment sets it) none is ever written: every ``audit-ledger`` process would then
    compile each module it imports from source, a cost no installed copy pays. Timing whole
    processes, the benches compile first (``compileall`` writes whatever that variable says).
    """
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(checkout / "audit_ledger")], check=True
    )


def db_url(name: str) -> str:
    return ADMIN.rpartition("/")[0] + "/" + name


def open_ledger(url: str, keys: Path) -> Ledger:
    return Ledger.open(load_settings(database_url=url, keys_dir=keys, checkpoint_origin=ORIGIN))


def create_ledger_database(name: str, keys: Path) -> str:
    """A new database ``name`` on ADMIN's server with the schema migrated, and keys in
    ``keys``; its URL."""
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = db_url(name)
    init_keys(keys, ORIGIN)
    engine = create_engine_for_url(url)
    migrations.upgrade(engine)
    engine.dispose()
    return url


def database_exists(name: str) -> bool:
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return found is not None


@contextmanager
def throwaway_ledger(prefix: str) -> Iterator[tuple[str, str, Path, Ledger]]:
    """A new database on ADMIN's server, keys in a temporary folder, the schema migrated and a
    ledger open on them; everything is dropped afterwards. Yields (database name, its URL, the
    keys folder — whose parent is free for other files — and the ledger)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            keys = Path(tmp) / "keys"
            url = create_ledger_database(name, keys)
            ledger = open_ledger(url, keys)
            try:
                yield name, url, keys, ledger
            finally:
                ledger.close()
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def financial(i: int) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "category": "financial_transactions",
        "event_type": "payment_completed",
        "occurred_at": "2026-11-28T10:55:17.123456+07:00",
        "correlation_id": f"corr-{i:08d}",
        "data": {
            "user_id": 100000 + i % 5000,
            "amount": f"{(i % 997) * 1000}.00",
            "payment_method": "qris",
            "order_id": f"ORD-2026-{i:09d}",
        },
    }


def bench_append(
    ledger: Ledger,
    n: int,
    batch: int,
    jobs: int,
    *,
    make: Callable[[int], dict[str, object]] = financial,
    first: int = 0,
) -> float:
    """The bulk import path (``audit-ledger append FILE``): JSON lines in, ``jobs`` processes
    parsing and validating ahead of the committing one; events ``make(first … first+n-1)``."""
    lines = [(i + 1, json.dumps(make(first + i))) for i in range(n)]
    start = time.perf_counter()
    result = ledger.appends.import_lines(lines, "bench", batch_size=batch, jobs=jobs)
    elapsed = time.perf_counter() - start
    assert result.appended == n, result
    return n / elapsed


def row_size(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT avg(length(e.leaf) + length(p.blob) + 32 + 120)::int FROM entries e "
            "JOIN payloads p USING (seq)"
        ).fetchone()
        return int(row[0]) if row and row[0] else 800


def bench_raw_copy(url: str, n: int, batch: int, size: int) -> float:
    payload = os.urandom(size)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE raw_rows (seq bigint PRIMARY KEY, body bytea NOT NULL)")
        conn.commit()
        start = time.perf_counter()
        for lo in range(0, n, batch):
            with conn.cursor() as cur, cur.copy("COPY raw_rows (seq, body) FROM STDIN") as copy:
                for seq in range(lo, min(lo + batch, n)):
                    copy.write_row((seq, payload))
            conn.commit()
        return n / (time.perf_counter() - start)


def bench_raw_read(url: str) -> tuple[float, int]:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        start = time.perf_counter()
        total = 0
        with cur.copy("COPY entries TO STDOUT") as copy:
            for block in copy:
                total += len(block)
        elapsed = time.perf_counter() - start
        count = conn.execute("SELECT count(*) FROM entries").fetchone()
        assert count is not None
        return int(count[0]) / elapsed, total


VERIFY_CHILD = """
import json, sys, time
from audit_ledger.ledger.service import Ledger  # noqa: E402
from audit_ledger.settings import load_settings
led = Ledger.open(load_settings())
t = time.perf_counter(); report = led.verification.run(jobs=int(sys.argv[1])); dt = time.perf_counter() - t
# VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec and would report the parent's peak.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
# The largest worker (an upper bound: a child's ru_maxrss includes this process's size at fork).
import resource
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"ok": report.ok, "size": report.size, "seconds": dt, "maxrss_mib": hwm / 1024,
                  "worker_maxrss_mib": workers / 1024}))
"""


def verify_in_child(url: str, keys: Path, jobs: int) -> dict[str, float]:
    env = dict(
        os.environ,
        AUDIT_LEDGER_DATABASE_URL=url,
        AUDIT_LEDGER_KEYS_DIR=str(keys),
        AUDIT_LEDGER_CHECKPOINT_ORIGIN=ORIGIN,
    )
    out = subprocess.run(
        [sys.executable, "-c", VERIFY_CHILD, str(jobs)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(os.cpu_count() or 1, 4),
        help="import worker processes (the CLI's default for large files)",
    )
    parser.add_argument(
        "--memory-sizes",
        default="100000,1000000",
        help="comma-separated log sizes for the verify memory check ('' to skip)",
    )
    parser.add_argument(
        "--end-to-end",
        type=int,
        default=100_000,
        help="events for the whole-process figures of bench/end_to_end.py (0 to skip)",
    )
    args = parser.parse_args()
    if args.end_to_end:
        from bench.end_to_end import report_runs

        report_runs(args.end_to_end, 1)
    with throwaway_ledger("al_bench") as (name, url, keys, ledger):
        print(
            f"# bench/append.py  events={args.events} batch={args.batch}  "
            f"cpus={os.cpu_count()}  postgres={name}"
        )
        append_rate = bench_append(ledger, args.events, args.batch, args.jobs)
        size = row_size(url)
        copy_rate = bench_raw_copy(url, args.events, args.batch, size)
        print(
            f"append  ledger {append_rate:10,.0f} events/s | raw COPY ({size} B rows) "
            f"{copy_rate:10,.0f} rows/s | ratio {append_rate / copy_rate:.2f} (target >= 0.20)"
            f"  [import with {args.jobs} worker processes]"
        )
        if args.jobs > 1:
            single = bench_append(ledger, args.events // 4, args.batch, 1)
            print(
                f"append  ledger {single:10,.0f} events/s in one process "
                f"({args.events // 4:,} events) | ratio {single / copy_rate:.2f}"
            )
        ledger.log.checkpoint()
        verified = verify_in_child(url, keys, args.jobs)
        assert verified["ok"], verified
        read_rate, _ = bench_raw_read(url)
        verify_rate = verified["size"] / verified["seconds"]
        print(
            f"verify  ledger {verify_rate:10,.0f} entries/s | raw COPY TO STDOUT "
            f"{read_rate:10,.0f} rows/s | ratio {verify_rate / read_rate:.2f} (target >= 0.15)"
        )
        print(
            f"verify  peak RSS at {verified['size']:,} entries: {verified['maxrss_mib']:.0f} MiB"
            f" (largest worker <= {verified['worker_maxrss_mib']:.0f} MiB)"
        )
        for target in [int(s) for s in args.memory_sizes.split(",") if s.strip()]:
            current = ledger.log.size()
            if target > current:
                bench_append(ledger, target - current, args.batch, args.jobs)
            result = verify_in_child(url, keys, args.jobs)
            assert result["ok"], result
            print(
                f"memory  verify of {result['size']:>9,} entries: peak RSS "
                f"{result['maxrss_mib']:6.0f} MiB (largest worker <= "
                f"{result['worker_maxrss_mib']:.0f} MiB), "
                f"{result['size'] / result['seconds']:,.0f} entries/s"
            )


if __name__ == "__main__":
    main()
