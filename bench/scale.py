"""Scale run (issue #16 item 1): a ledger of ten million entries on PostgreSQL, measured.

    .venv/bin/python bench/scale.py build [--entries 10000000] [--chunk 1000000]
    .venv/bin/python bench/scale.py measure [--requests 10000] [--workers 2]
    .venv/bin/python bench/scale.py drop

``build`` grows one kept database (``al_scale`` on AUDIT_LEDGER_TEST_PG_URL's server; keys in
``/var/tmp/al_scale``) through the real bulk-import path (``import_lines``: validate, blind-index,
encrypt, hash, chain, COPY), ``--chunk`` entries at a time, and signs a checkpoint after each
chunk. It can be stopped and rerun: it continues from the current size. Events are mixed like
QuickCart's: 60% financial (an order each), 20% privacy (100,000 subjects, so as many per-subject
data keys), 20% security, with ``occurred_at`` spread over a year. After each chunk it prints
in-process proof and query timings, so growth with the log size shows.

``measure`` then reports, at the current size: database bytes per entry (tables and indexes);
checkpoint signing time; inclusion and consistency proof latency (p50/p99 over ``--requests``
random requests through HTTP to a real ``serve``); query latency for the common filters
(category + time range and seq by HTTP; user id and order id through ``POST /v1/events/search``;
event id through the console's read use case, which is the only place that filter exists);
full ``verify`` time and peak RSS in a fresh process; and ``tiles publish`` of the whole tree.

The machine is a shared, noisy 2-core box running client, server and PostgreSQL together.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep bench/ off sys.path: its http.py would shadow the standard library's ``http``.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import httpx
import psycopg
from psycopg import sql

ROOT = _BENCH.parent
sys.path.insert(0, str(ROOT))

from audit_ledger.crypto.keys import init_keys
from audit_ledger.ledger.reads import Query
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import load_settings
from audit_ledger.storage import migrations
from audit_ledger.storage.engine import create_engine_for_url
from bench.append import ADMIN, ORIGIN, db_url, verify_in_child
from bench.http import free_port, start_server

NAME = os.environ.get("AUDIT_LEDGER_SCALE_DB", "al_scale")
STATE = Path(os.environ.get("AUDIT_LEDGER_SCALE_DIR", "/var/tmp/al_scale"))
KEYS = STATE / "keys"
USERS = 100_000
YEAR_START = 1_764_547_200  # 2025-12-01T00:00:00Z
YEAR = 365 * 86400


def occurred(i: int, n_hint: int) -> str:
    """Spread over a year in log order (seconds resolution is enough for range filters)."""
    t = YEAR_START + (i * YEAR) // max(n_hint, 1)
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(t))


def event_id(i: int) -> str:
    """The i-th generated event's id (a valid v4 UUID), so a measurement can look one up."""
    return str(uuid.UUID(int=(0x5CA1E << 100) + i, version=4))


def event(i: int, n_hint: int) -> dict[str, object]:
    user = 100_000 + (i * 7919) % USERS
    kind = i % 10
    base: dict[str, object] = {
        "event_id": event_id(i),
        "occurred_at": occurred(i, n_hint),
        "correlation_id": f"corr-{i:010d}",
    }
    if kind < 6:
        base.update(
            category="financial_transactions",
            event_type="payment_completed",
            data={
                "user_id": user,
                "amount": f"{(i % 997) * 1000 + 500}.00",
                "payment_method": "qris",
                "order_id": f"ORD-{i:010d}",
            },
        )
    elif kind < 8:
        base.update(
            category="data_privacy_events",
            event_type="consent_updated",
            data={
                "user_id": user,
                "data_type": "phone_number",
                "action": "update",
                "consent_status": "granted" if i % 3 else "withdrawn",
            },
        )
    else:
        base.update(
            category="security_events",
            event_type="login_attempt",
            data={
                "event_type": "login",
                "source_ip": f"10.{i % 251}.{(i // 251) % 251}.{i % 97}",
                "user_id": user,
                "outcome": "success" if i % 5 else "failure",
            },
        )
    return base


def lines(lo: int, hi: int, n_hint: int) -> Iterator[tuple[int, str]]:
    for i in range(lo, hi):
        yield i + 1, json.dumps(event(i, n_hint))


def settings_env() -> dict[str, str]:
    return {
        "AUDIT_LEDGER_DATABASE_URL": db_url(NAME),
        "AUDIT_LEDGER_KEYS_DIR": str(KEYS),
        "AUDIT_LEDGER_CHECKPOINT_ORIGIN": ORIGIN,
    }


def open_ledger() -> Ledger:
    return Ledger.open(
        load_settings(database_url=db_url(NAME), keys_dir=KEYS, checkpoint_origin=ORIGIN)
    )


def ensure_database() -> None:
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (NAME,)).fetchone()
        if exists:
            return
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(NAME)))
    STATE.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not KEYS.exists():
        init_keys(KEYS, ORIGIN)
    engine = create_engine_for_url(db_url(NAME))
    migrations.upgrade(engine)
    engine.dispose()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def in_process_probe(ledger: Ledger, size: int) -> str:
    """Proof and query timings through the use cases (no HTTP), ms p50/p99."""
    rng = random.Random(size)
    incl = timed(lambda: ledger.log.inclusion_proof(rng.randrange(size), size), 300)
    cons = timed(lambda: ledger.log.consistency_proof(rng.randrange(1, size), size), 300)
    user = timed(  # page_for: the read use case without recording the read in the log
        lambda: ledger.reads.page_for(
            ["compliance_officer"],
            Query(category="financial_transactions", user_id=100_000 + rng.randrange(USERS)),
        ),
        100,
    )
    return (
        f"inclusion p50 {pct(incl, 50):.2f} p99 {pct(incl, 99):.2f} ms | consistency p50 "
        f"{pct(cons, 50):.2f} p99 {pct(cons, 99):.2f} ms | user-id query p50 "
        f"{pct(user, 50):.1f} p99 {pct(user, 99):.1f} ms"
    )


_TOKENS: dict[str, str] = {}


def auditor_token(ledger: Ledger, role: str = "auditor") -> str:
    if role not in _TOKENS:
        _TOKENS[role] = ledger.principals.add(f"scale-{role}-{uuid.uuid4().hex[:6]}", [role])
    return _TOKENS[role]


def build(target: int, chunk: int) -> None:
    ensure_database()
    ledger = open_ledger()
    try:
        size = ledger.log.size()
        print(f"# bench/scale.py build: {size:,} entries now, target {target:,}", flush=True)
        while size < target:
            hi = min(target, size + chunk)
            t = time.perf_counter()
            ledger.appends.import_lines(lines(size, hi, target), "bench", jobs=2)
            rate = (hi - size) / (time.perf_counter() - t)
            made = ledger.log.checkpoint()
            assert made is not None, "no checkpoint"
            assert made.tree_size >= hi, made
            size = ledger.log.size()
            print(f"{size:>11,} entries  import {rate:8,.0f}/s | {in_process_probe(ledger, size)}",
                  flush=True)  # fmt: skip
    finally:
        ledger.close()


def database_bytes(size: int) -> None:
    with psycopg.connect(db_url(NAME)) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 + 3 DESC"
        ).fetchall()
        total = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    print(f"database {total[0] / 1e9:.2f} GB = {total[0] / size:,.0f} bytes per entry")  # type: ignore[index]
    for name, table, index in rows:
        if table + index > 1 << 20:
            print(
                f"  {name:26s} table {table / size:7.1f} B/entry  indexes {index / size:7.1f} B/entry"
            )


async def latencies(
    make: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]], n: int, clients: int
) -> list[float]:
    out: list[float] = []
    counter = iter(range(n))

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            t = time.perf_counter()
            response = await make(http, i)
            out.append((time.perf_counter() - t) * 1000)
            if response.status_code != 200:
                raise SystemExit(
                    f"{response.request.url.path}: {response.status_code} {response.text}"
                )

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return out


def report(label: str, values: list[float]) -> None:
    print(f"{label:44s} p50 {pct(values, 50):7.2f} ms  p99 {pct(values, 99):7.2f} ms  "
          f"mean {statistics.fmean(values):7.2f} ms  (n={len(values):,})")  # fmt: skip


def measure(requests: int, workers: int, clients: int) -> None:
    ledger = open_ledger()
    size = ledger.log.size()
    print(f"# bench/scale.py measure: {size:,} entries, cpus={os.cpu_count()}, {workers} workers")
    database_bytes(size)
    ledger.appends.import_lines(lines(size, size + 1000, size + 1000), "bench", jobs=1)
    t = time.perf_counter()
    made = ledger.log.checkpoint()
    assert made is not None
    print(f"checkpoint signing at {made.tree_size:,}: {(time.perf_counter() - t) * 1000:.1f} ms")
    size = made.tree_size
    tokens = {role: auditor_token(ledger, role) for role in ("auditor", "compliance_officer")}
    eid = timed(
        lambda: ledger.reads.page_for(
            ["auditor"],
            Query(event_id=event_id(random.randrange(size - 1000)), limit=10),
        ),
        500,
    )
    ledger.close()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_server(db_url(NAME), KEYS, port, workers, Path(tmp))
        try:
            base = f"http://127.0.0.1:{port}"
            auth = {"Authorization": f"Bearer {tokens['auditor']}"}
            officer = {"Authorization": f"Bearer {tokens['compliance_officer']}"}
            rng = random.Random(7)

            def get(
                path: str, headers: dict[str, str] = auth
            ) -> Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]:
                return lambda http, i: http.get(base + path.format(r=rng), headers=headers)

            def month(r: random.Random) -> str:
                m = r.randrange(12)
                y, mm = 2025 + (11 + m) // 12, (11 + m) % 12 + 1
                return f"since={y}-{mm:02d}-01T00:00:00Z&until={y}-{mm:02d}-02T00:00:00Z"

            cases: list[tuple[str, Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]], int]] = [
                ("inclusion proof (HTTP)", lambda http, i: http.get(
                    f"{base}/v1/log/proof/inclusion", headers=auth,
                    params={"seq": rng.randrange(size), "tree_size": size}), requests),
                ("consistency proof (HTTP)", lambda http, i: http.get(
                    f"{base}/v1/log/proof/consistency", headers=auth,
                    params={"first": rng.randrange(1, size), "second": size}), requests),
                ("category + one-day range, 100 rows (HTTP)", lambda http, i: http.get(
                    f"{base}/v1/events?category=financial_transactions&limit=100&{month(rng)}",
                    headers=officer), requests // 10),
                ("one entry by seq (HTTP)", lambda http, i: http.get(
                    f"{base}/v1/events/{rng.randrange(size)}", headers=auth), requests // 10),
                ("user id, 100 rows (HTTP search)", lambda http, i: http.post(
                    f"{base}/v1/events/search", headers=officer,
                    json={"category": "financial_transactions",
                          "user_id": 100_000 + rng.randrange(USERS), "limit": 100}), requests // 10),
                ("order id (HTTP search)", lambda http, i: http.post(
                    f"{base}/v1/events/search", headers=officer,
                    json={"category": "financial_transactions",
                          "order_id": f"ORD-{rng.randrange(size - 1000) // 10 * 10:010d}"}), requests // 10),
            ]  # fmt: skip
            for label, make, n in cases:
                asyncio.run(latencies(make, min(200, n), clients))  # warm-up
                report(label, asyncio.run(latencies(make, n, clients)))
            report("event id (console read use case, in-process)", eid)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    t = time.perf_counter()
    result = verify_in_child(db_url(NAME), KEYS, 2)
    assert result["ok"], result
    print(f"verify (2 jobs): {result['seconds']:,.0f} s = {result['size'] / result['seconds']:,.0f} "
          f"entries/s, peak RSS {result['maxrss_mib']:.0f} MiB (largest worker <= "
          f"{result['worker_maxrss_mib']:.0f} MiB); process {time.perf_counter() - t:,.0f} s")  # fmt: skip
    ledger = open_ledger()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            published = ledger.tiles.publish(Path(tmp) / "site")
            took = time.perf_counter() - t
            print(f"tiles publish (empty dir): {took:,.0f} s, {published.written:,} tiles "
                  f"({published.written / took:,.0f}/s)")  # fmt: skip
    finally:
        ledger.close()


def drop() -> None:
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(NAME))
        )
    shutil.rmtree(STATE, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--entries", type=int, default=10_000_000)
    b.add_argument("--chunk", type=int, default=1_000_000)
    m = sub.add_parser("measure")
    m.add_argument("--requests", type=int, default=10_000)
    m.add_argument("--workers", type=int, default=2)
    m.add_argument("--clients", type=int, default=8)
    sub.add_parser("drop")
    args = parser.parse_args()
    if args.command == "build":
        build(args.entries, args.chunk)
    elif args.command == "measure":
        measure(args.requests, args.workers, args.clients)
    else:
        drop()


if __name__ == "__main__":
    main()
