"""Auditor benchmark (``audit-ledger audit``) — one run on PostgreSQL, printed side by side.

    .venv/bin/python bench/audit.py [--entries 100000] [--workers 2]

Against a real ``audit-ledger serve``, with a signed checkpoint over ``--entries`` entries:

* the first audit into an empty mirror (every leaf fetched, checked, written; consistency and
  inclusion proofs) → leaves/s, against merely fetching the same pages of leaves over HTTP in
  the same run (what any auditor must do at least);
* an incremental audit after 1% more entries → seconds (only the new leaves are fetched);
* ``audit --offline`` over the whole mirror → leaves/s, against only reading and decoding the
  mirror's file in the same run.

The machine is a shared, noisy 2-core box running client, server and PostgreSQL together:
compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py shadows the standard library's ``http`` (which httpx needs) while this folder
# is on sys.path: keep it off.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]

import argparse
import asyncio
import base64
import json
import os
import signal
import time

ROOT = _BENCH.parent
sys.path.insert(0, str(ROOT))

from audit_ledger.auditor.mirror import Mirror, open_mirror
from audit_ledger.auditor.monitor import audit_server, verify_mirror
from audit_ledger.client import AuditLedgerClient
from audit_ledger.core.checkpoint import parse_verifier_key
from bench.append import bench_append, throwaway_ledger
from bench.http import free_port, start_server

PAGE = 1000


async def fetch_only(base: str, token: str, size: int) -> float:
    """Every leaf up to ``size`` over HTTP, decoded and dropped: leaves/s."""
    async with AuditLedgerClient(base, token, timeout=120) as client:
        start = time.perf_counter()
        seq = 0
        while seq < size:
            page = await client.get_leaves(seq, min(size, seq + PAGE))
            seq = page[-1][0] + 1
        return size / (time.perf_counter() - start)


async def audit_once(base: str, token: str, mirror: Mirror, key: str) -> tuple[float, int]:
    async with AuditLedgerClient(base, token, timeout=120) as client:
        start = time.perf_counter()
        report = await audit_server(client, mirror, parse_verifier_key(key))
        return time.perf_counter() - start, report.new_leaves


def read_only(path: Path) -> float:
    """Read and decode the mirror's leaves file without checking anything: leaves/s."""
    start = time.perf_counter()
    count = 0
    with path.open("rb") as leaves:
        for line in leaves:
            base64.b64decode(json.loads(line)["leaf"])
            count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with throwaway_ledger("al_bench_audit") as (name, url, keys, ledger):
        tmp = keys.parent
        proc = None
        try:
            token = ledger.principals.add("bench-auditor", ["auditor"])
            key = ledger.log.verifier_key()
            print(f"# bench/audit.py  workers={args.workers} cpus={os.cpu_count()} postgres={name}")
            bench_append(ledger, args.entries, 1000, min(os.cpu_count() or 1, 4))
            size = ledger.log.checkpoint().tree_size  # type: ignore[union-attr]
            port = free_port()
            proc = start_server(url, keys, port, args.workers, tmp)
            base = f"http://127.0.0.1:{port}"

            baseline = asyncio.run(fetch_only(base, token, size))
            with open_mirror(tmp / "mirror", create=True) as mirror:
                seconds, checked = asyncio.run(audit_once(base, token, mirror, key))
            assert checked == size, (checked, size)
            rate = size / seconds
            print(
                f"first audit of {size:,} entries: {rate:9,.0f} leaves/s | fetching the leaves "
                f"alone {baseline:9,.0f} leaves/s | ratio {rate / baseline:.2f}"
            )

            bench_append(ledger, max(1, args.entries // 100), 1000, 1)
            newer = ledger.log.checkpoint().tree_size  # type: ignore[union-attr]
            with open_mirror(tmp / "mirror", create=False) as mirror:
                seconds, checked = asyncio.run(audit_once(base, token, mirror, key))
            print(f"incremental audit: {checked:,} new leaves (to {newer:,}) in {seconds:.2f} s")

            raw = read_only(tmp / "mirror" / "leaves.jsonl")
            with open_mirror(tmp / "mirror", create=False) as mirror:
                start = time.perf_counter()
                report = verify_mirror(mirror, parse_verifier_key(key))
                offline = report.tree_size / (time.perf_counter() - start)
            print(
                f"offline re-check of {report.tree_size:,}: {offline:9,.0f} leaves/s | reading "
                f"the file alone {raw:9,.0f} leaves/s | ratio {offline / raw:.2f}"
            )
        finally:
            if proc is not None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
