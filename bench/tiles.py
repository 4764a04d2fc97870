"""Tiles benchmark (issue #13: tlog-tiles) — one run on PostgreSQL, printed side by side.

    .venv/bin/python bench/tiles.py [--entries 1000000] [--requests 20000] [--clients 16]

With a signed checkpoint over ``--entries`` entries (bulk-imported first, not timed here):

* tile serving through a real ``audit-ledger serve`` (``AUDIT_LEDGER_TILES_PUBLIC=true``):
  ``--clients`` concurrent clients fetch random tiles (level-0 hash tiles, entry bundles, the
  level-1/2 tiles, partial tiles) → tiles/s, p50/p99 latency; against the same tiles read
  in-process through the ledger (one range SELECT each, no HTTP) in the same run;
* ``tiles publish`` of the whole tree into an empty directory → seconds, files, MB; then an
  incremental publication after 1% more entries.

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
import os
import random
import signal
import statistics
import tempfile
import time

import httpx

ROOT = _BENCH.parent
sys.path.insert(0, str(ROOT))

from audit_ledger.core.tiles import Tile, tiles_for_size
from audit_ledger.ledger.service import Ledger
from bench.append import bench_append, throwaway_ledger
from bench.http import free_port, start_server


def tile_mix(size: int, n: int, *, entries: bool, seed: int = 13) -> list[Tile]:
    """``n`` random tiles of the tree: entry bundles (``entries``), or hash tiles (nearly all
    full level-0 tiles, what a client proving entries fetches, and the few higher ones)."""
    tiles = [t for t in tiles_for_size(size) if t.entries == entries]
    rng = random.Random(seed)
    return [rng.choice(tiles) for _ in range(n)]


async def serve_bench(base: str, tiles: list[Tile], clients: int) -> tuple[float, list[float], int]:
    """tiles/s, latencies and the number of requests retried after a dropped connection (a
    keep-alive connection the server closed just as the client reused it)."""
    latencies: list[float] = []
    queue = list(tiles)
    retried = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal retried
        while queue:
            tile = queue.pop()
            t0 = time.perf_counter()
            try:
                r = await http.get(f"/tlog/{tile.path()}")
            except httpx.TransportError:
                retried += 1
                r = await http.get(f"/tlog/{tile.path()}")
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise SystemExit(f"{tile.path()}: {r.status_code} {r.text[:200]}")

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return len(tiles) / elapsed, latencies, retried


def in_process(ledger: Ledger, tiles: list[Tile]) -> float:
    start = time.perf_counter()
    for tile in tiles:
        ledger.tiles.read(tile)
    return len(tiles) / (time.perf_counter() - start)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


def tree_bytes(directory: Path) -> tuple[int, int]:
    files = [p for p in directory.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with throwaway_ledger("al_bench_tiles") as (name, url, keys, ledger):
        print(f"# bench/tiles.py  entries={args.entries:,} cpus={os.cpu_count()} postgres={name}")
        t0 = time.perf_counter()
        rate = bench_append(ledger, args.entries, 1000, min(os.cpu_count() or 1, 4))
        made = ledger.log.checkpoint()
        assert made is not None
        print(f"setup: {args.entries:,} entries imported at {rate:,.0f}/s, checkpoint signed "
              f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
        size = made.tree_size
        mixes = {
            kind: tile_mix(size, args.requests, entries=kind == "entry bundles")
            for kind in ("hash tiles", "entry bundles")
        }
        local = {kind: in_process(ledger, tiles[:2000]) for kind, tiles in mixes.items()}
        with tempfile.TemporaryDirectory() as tmp:
            site = Path(tmp) / "site"
            t0 = time.perf_counter()
            report = ledger.tiles.publish(site)
            full_s = time.perf_counter() - t0
            files, total = tree_bytes(site)
            print(f"publish (empty dir): {full_s:7.1f} s  {report.written:,} tiles + checkpoint, "
                  f"{files:,} files, {total / 1e6:,.1f} MB ({report.written / full_s:,.0f} files/s)")  # fmt: skip
            bench_append(ledger, max(1, args.entries // 100), 1000, 1)
            ledger.log.checkpoint()
            t0 = time.perf_counter()
            report = ledger.tiles.publish(site)
            print(f"publish (+1% entries): {time.perf_counter() - t0:5.2f} s  {report.written:,} "
                  f"tiles written, {report.kept:,} already there")  # fmt: skip
        ledger.close()
        port = free_port()
        os.environ["AUDIT_LEDGER_TILES_PUBLIC"] = "true"
        proc = start_server(url, keys, port, args.workers, keys.parent)
        try:
            base = f"http://127.0.0.1:{port}"
            for kind, tiles in mixes.items():
                asyncio.run(serve_bench(base, tiles[:200], args.clients))  # warm-up
                tps, lat, retried = asyncio.run(serve_bench(base, tiles, args.clients))
                print(f"serve {kind}: {args.requests:,} random, {args.clients} clients, "
                      f"{args.workers} workers: {tps:8,.0f}/s  p50 {pct(lat, 50):6.1f} ms  "
                      f"p99 {pct(lat, 99):6.1f} ms | in-process reads {local[kind]:8,.0f}/s | "
                      f"ratio {tps / local[kind]:.2f} (retried {retried}, server "
                      f"{'alive' if proc.poll() is None else 'EXITED'})")  # fmt: skip
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
