"""SIEM forwarding benchmark (issue #15): appends with syslog forwarding on vs off.

    .venv/bin/python bench/forwarding.py [--events 3000] [--clients 8] [--rounds 2]

A real ``audit-ledger serve`` (one worker, PostgreSQL) takes single-event appends from
``--clients`` concurrent clients, alternately without forwarding and with every tier forwarded
over TLS to a real rsyslog (the worst case: each append writes two forwarded lines, its
``http_request`` and ``event_appended``). Printed: events/s and p50/p99 latency per run, and the
ratio of the medians (the issue's target: no append slower by more than 5 %).

The machine is a shared, noisy 2-core box running client, server, PostgreSQL and rsyslog
together: compare the ratios, not the absolute numbers, and run several rounds.
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
# bench/http.py shadows the standard library's ``http`` (which httpx needs) while this folder
# is on sys.path: keep it off.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]

import argparse  # noqa: E402 - after the sys.path fix above
import asyncio  # noqa: E402 - after the sys.path fix above
import logging  # noqa: E402 - after the sys.path fix above
import os  # noqa: E402 - after the sys.path fix above
import signal  # noqa: E402 - after the sys.path fix above
import statistics  # noqa: E402 - after the sys.path fix above
import tempfile  # noqa: E402 - after the sys.path fix above
import time  # noqa: E402 - after the sys.path fix above

ROOT = _BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.append import throwaway_ledger  # noqa: E402 - after the sys.path fix above
from bench.http import free_port, pct, post_singles, start_server  # noqa: E402 - after the sys.path fix above
from tests.support.rsyslog import Rsyslog  # noqa: E402 - after the sys.path fix above


def run(
    url: str, keys: Path, token: str, env: dict[str, str], args: argparse.Namespace
) -> tuple[float, float, float]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        port = free_port()
        proc = start_server(url, keys, port, 1, keys.parent)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        base = f"http://127.0.0.1:{port}"
        asyncio.run(post_singles(base, token, args.clients, 200))  # warm up
        rate, latencies = asyncio.run(post_singles(base, token, args.clients, args.events))
        return rate, pct(latencies, 50), pct(latencies, 99)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def per_line(directory: Path, url: str, ca_file: Path | None, lines: int) -> tuple[float, float]:
    """In this process: us per structured log line through the configured tier files, without
    and with a forwarder (best of 3 each, alternating). What an append pays for forwarding is
    this difference times its lines (two: ``http_request`` and ``event_appended``)."""
    from audit_ledger.observability.loggers import get_logger
    from audit_ledger.observability.logging import configure_logging

    best = {"off": float("inf"), "on": float("inf")}
    log = get_logger("application")
    for _ in range(3):
        for mode in ("off", "on"):
            configure_logging(
                directory / mode,
                syslog_url=url if mode == "on" else "",
                syslog_tiers="application",
                syslog_ca_file=ca_file,
                syslog_queue_size=lines + 1,
            )
            root = logging.getLogger()
            for h in [h for h in root.handlers if type(h) is logging.StreamHandler]:
                root.removeHandler(h)  # the terminal is not what is measured
            start = time.perf_counter()
            for n in range(lines):
                log.info("event_appended", seq=n, category="financial_transactions")
            best[mode] = min(best[mode], (time.perf_counter() - start) / lines * 1e6)
    configure_logging(None)
    return best["off"], best["on"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lines", type=int, default=20_000)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        throwaway_ledger("al_bench_fwd") as (
            name,
            url,
            keys,
            ledger,
        ),
    ):
        token = ledger.principals.add("bench-bot", ["writer"])
        ledger.close()
        receiver = Rsyslog(Path(tmp) / "rsyslog", tls=True).start()
        forwarding = {
            "AUDIT_LEDGER_SYSLOG_URL": receiver.url,
            "AUDIT_LEDGER_SYSLOG_CA_FILE": str(receiver.ca_file),
            "AUDIT_LEDGER_SYSLOG_TIERS": "security,error,scheduler,application,performance",
        }
        print(
            f"# bench/forwarding.py  cpus={os.cpu_count()} postgres={name} clients={args.clients}"
        )
        rates: dict[str, list[float]] = {"off": [], "on": []}
        try:
            for _ in range(args.rounds):
                for mode, env in (("off", {}), ("on", forwarding)):
                    rate, p50, p99 = run(url, keys, token, env, args)
                    rates[mode].append(rate)
                    print(
                        f"forwarding {mode:3}: {rate:8,.0f} events/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
                    )
            received = len(receiver.settle(quiet=1.0))
            # Last: it configures this process's logging (the HTTP clients above must not log).
            off_us, on_us = per_line(Path(tmp) / "logs", receiver.url, receiver.ca_file, args.lines)
            print(
                f"one log line in process: {off_us:.1f} us without forwarding, {on_us:.1f} us "
                f"with (+{on_us - off_us:.1f} us; an append writes two)"
            )
        finally:
            receiver.stop()
        off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
        print(
            f"median: off {off:,.0f} events/s, on {on:,.0f} events/s -> on/off {on / off:.3f} "
            f"(target >= 0.95); {received:,} lines received by rsyslog"
        )


if __name__ == "__main__":
    main()
