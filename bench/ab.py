"""Two checkouts of audit-ledger timed against each other as whole processes, alternated.

    .venv/bin/python bench/ab.py OTHER_CHECKOUT [--rounds 4] [--events 100000]

    git worktree add --detach /tmp/before e847765   # e.g. the code before a change
    .venv/bin/python bench/ab.py /tmp/before

On a shared box whose speed drifts by tens of percent within minutes, this run's figures set
against last hour's say little about a change. Here both versions import the same file and
verify the result, round by round, the order flipping each round, and the medians are compared.
Each version runs from its own source (``PYTHONPATH``; this interpreter and its packages) as
``python -m audit_ledger.cli`` — ``keys init``, ``db upgrade``, ``append FILE``, ``verify`` — on
a fresh PostgreSQL database of its own, so each has the schema it migrates to.
Each step's wall time and its CPU time (the command and the workers it waited for; PostgreSQL's
share is not in it) are both reported: the CPU time moves less with the other tenants' load.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep bench/ off sys.path: its http.py would shadow the standard library's ``http``.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]

import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
import uuid

import psycopg
from psycopg import sql

ROOT = _BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.append import ADMIN, ORIGIN, compile_bytecode, db_url, financial

STEPS = ("append", "verify")
#: What is timed of each step: the wall clock, and the CPU time of its processes.
FIGURES = (*STEPS, *(f"{step} cpu" for step in STEPS))


def cli(checkout: Path, args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Run ``audit-ledger ARGS`` from ``checkout``'s source: seconds from start to exit, and
    the CPU seconds (user + system) of the process and the workers it waited for — steadier
    than the wall clock on a shared box, though PostgreSQL's own share is not in it."""
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-m", "audit_ledger.cli", *args],
        env=dict(env, PYTHONPATH=str(checkout)),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: audit-ledger {args[0]} failed:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def one(checkout: Path, events: Path, folder: Path) -> dict[str, float]:
    """Both steps once, on a new database and new keys."""
    name = f"al_ab_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        keys = folder / name
        env = dict(
            os.environ,
            AUDIT_LEDGER_DATABASE_URL=db_url(name),
            AUDIT_LEDGER_KEYS_DIR=str(keys),
            AUDIT_LEDGER_CHECKPOINT_ORIGIN=ORIGIN,
        )
        cli(checkout, ["keys", "init"], env, folder)
        cli(checkout, ["db", "upgrade"], env, folder)
        append, append_cpu = cli(checkout, ["append", str(events)], env, folder)
        verify, verify_cpu = cli(checkout, ["verify"], env, folder)
        return {
            "append": append,
            "verify": verify,
            "append cpu": append_cpu,
            "verify cpu": verify_cpu,
        }
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("other", type=Path, help="the checkout to compare this one with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    versions = {"this": ROOT, "other": args.other.resolve()}
    if not (versions["other"] / "audit_ledger" / "cli").is_dir():
        raise SystemExit(f"{args.other} is not an audit-ledger checkout")
    times: dict[str, dict[str, list[float]]] = {v: {f: [] for f in FIGURES} for v in versions}
    for checkout in versions.values():
        compile_bytecode(checkout)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        events = folder / "events.jsonl"
        events.write_text("".join(json.dumps(financial(i)) + "\n" for i in range(args.events)))
        print(f"# bench/ab.py  events={args.events}  rounds={args.rounds}  cpus={os.cpu_count()}")
        print(f"# this = {versions['this']}, other = {versions['other']}")
        for round_ in range(args.rounds):
            order = list(versions) if round_ % 2 == 0 else list(reversed(versions))
            for version in order:
                figures = one(versions[version], events, folder)
                for figure in FIGURES:
                    times[version][figure].append(figures[figure])
                print(
                    f"round {round_ + 1} {version:5s} "
                    + "  ".join(f"{f} {figures[f]:.2f} s" for f in FIGURES),
                    flush=True,
                )
    for figure in FIGURES:
        this, other = (statistics.median(times[v][figure]) for v in versions)
        print(
            f"{figure}: median this {this:.2f} s, other {other:.2f} s "
            f"-> this takes {this / other:.2f}x the other's"
        )


if __name__ == "__main__":
    main()
