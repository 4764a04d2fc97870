"""Worker processes for the concurrency and crash tests (run as ``python -m``, one OS process each).

Kept cheap to import: only the standard library, the ledger service and the event factory — never
pytest or the fixtures. Each worker builds its own :class:`Ledger` from settings, exactly as a
separate service process would.

``python -m tests.integration.workers append <config.json>``
    Appends ``count`` new events in a random mix of single appends and batches (sizes 2..50),
    resubmits about one submission in ten of already acknowledged events, submits every event of
    a shared list that all workers also submit (cross-process duplicates), now and then tries a
    batch that reuses an acknowledged ``event_id`` with other content (must be refused whole) and
    signs a checkpoint. Writes every receipt it got to ``out`` as JSON.

``python -m tests.integration.workers crash <config.json>``
    Prepares the batch in ``events``, prints ``ready <postgres backend pid or 0>``, waits for
    ``go`` on stdin, prints ``starting`` right before the one-transaction append, then
    ``committed <first seq> <last leaf hash>`` once it is acknowledged, and sleeps until the
    parent kills it.

``python -m tests.integration.workers pool <config.json>``
    Owns a :class:`WorkerPool` (``job``, ``setup``, ``jobs``), prints ``workers <pid> <pid>…``
    and maps ``tasks`` — for as long as the workers take, which is until the parent kills it
    when they block — then prints ``done``.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text

from audit_ledger.errors import ConflictError
from audit_ledger.ledger.service import Ledger
from audit_ledger.ledger.workers import WorkerPool
from audit_ledger.settings import load_settings
from tests.support.factories import event

CATEGORIES = ("financial_transactions", "data_privacy_events", "security_events")


def open_ledger(cfg: dict[str, Any]) -> Ledger:
    return Ledger.open(
        load_settings(
            database_url=cfg["database_url"],
            keys_dir=Path(cfg["keys_dir"]),
            checkpoint_origin=cfg["origin"],
        )
    )


def new_event(rng: random.Random) -> dict[str, Any]:
    """A fresh event; a small pool of users so subject-scoped data keys are shared and raced."""
    raw = event(rng.choice(CATEGORIES), user_id=rng.randint(1, 12))
    raw["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return raw


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no start signal {path}")
        time.sleep(0.005)


def run_appender(cfg: dict[str, Any]) -> None:
    rng = random.Random(cfg["seed"])
    writer = f"worker-{cfg['worker']}"
    ledger = open_ledger(cfg)
    try:
        ledger.log.size()  # connect before the start signal
        shared: list[dict[str, Any]] = json.loads(Path(cfg["shared"]).read_text())
        shared_ids = [r["event_id"] for r in shared]
        rng.shuffle(shared)
        Path(cfg["ready"]).touch()
        _wait_for(Path(cfg["go"]), 120)

        acked: list[dict[str, Any]] = []
        submissions: list[dict[str, Any]] = []
        remaining = cfg["count"]
        checkpoints = 0
        while remaining > 0 or shared:
            draw = rng.random()
            if acked and draw < 0.10:
                # Resubmission of events already acknowledged to this worker: same receipts back.
                # One event, or a batch of 2..10 when enough have been acknowledged.
                k = (
                    1
                    if len(acked) < 2 or rng.random() < 0.5
                    else rng.randint(2, min(10, len(acked)))
                )
                raws = rng.sample(acked, k)
                submissions.append(_submit(ledger, writer, "replay", raws, ["again"] * k))
                continue
            if acked and draw < 0.115:
                # An acknowledged event_id with other content inside a batch of new events:
                # a conflict, so none of the batch may be written.
                bad = copy.deepcopy(rng.choice(acked))
                bad["data"]["user_id"] = bad["data"]["user_id"] + 1000
                raws = [new_event(rng) for _ in range(rng.randint(0, 5))]
                raws.insert(rng.randint(0, len(raws)), bad)
                roles = ["conflict" if r is bad else "rejected" for r in raws]
                try:
                    ledger.appends.append(ledger.appends.prepare_batch(raws), writer)
                except ConflictError:
                    submissions.append(
                        {
                            "kind": "conflict",
                            "event_ids": [r["event_id"] for r in raws],
                            "roles": roles,
                            "receipts": None,
                        }
                    )
                    continue
                raise AssertionError("a conflicting batch was accepted")
            if draw > 0.98:
                ledger.log.checkpoint()
                checkpoints += 1
            n = min(remaining, 1 if rng.random() < 0.5 else rng.randint(2, 50))
            raws = [new_event(rng) for _ in range(n)]
            remaining -= n
            if shared and (n == 0 or rng.random() < 0.3):
                # Every worker submits every shared event: cross-process duplicates.
                raws.insert(rng.randint(0, len(raws)), shared.pop())
            if n >= 2 and rng.random() < 0.2:
                # The same new event twice in one batch: the second gets the first's receipt.
                raws.insert(rng.randint(0, len(raws)), raws[rng.randrange(len(raws))])
            if acked and rng.random() < 0.1:
                raws.insert(rng.randint(0, len(raws)), rng.choice(acked))
            roles = _roles_for(raws, acked, shared_ids=shared_ids)
            submission = _submit(ledger, writer, "fresh", raws, roles)
            submissions.append(submission)
            seen = {r["event_id"] for r in acked}
            for raw in raws:
                if raw["event_id"] not in seen:
                    seen.add(raw["event_id"])
                    acked.append(raw)
        out = {"writer": writer, "checkpoints": checkpoints, "submissions": submissions}
        tmp = Path(cfg["out"] + ".tmp")
        tmp.write_text(json.dumps(out))
        tmp.replace(cfg["out"])
    finally:
        ledger.close()


def _roles_for(
    raws: list[dict[str, Any]], acked: list[dict[str, Any]], *, shared_ids: list[str]
) -> list[str]:
    """Why each event of a submission is there: new, dup (again in this batch), again, shared."""
    acked_ids = {r["event_id"] for r in acked}
    shared_set = set(shared_ids)
    seen: set[str] = set()
    roles = []
    for raw in raws:
        eid = raw["event_id"]
        if eid in seen:
            roles.append("dup")
        elif eid in acked_ids:
            roles.append("again")
        elif eid in shared_set:
            roles.append("shared")
        else:
            roles.append("new")
        seen.add(eid)
    return roles


def _submit(
    ledger: Ledger, writer: str, kind: str, raws: list[dict[str, Any]], roles: list[str]
) -> dict[str, Any]:
    receipts = ledger.appends.append(ledger.appends.prepare_batch(raws), writer)
    return {
        "kind": kind,
        "event_ids": [r["event_id"] for r in raws],
        "roles": roles,
        "receipts": [[r.seq, r.event_id, r.leaf_hash, r.recorded_at, r.replayed] for r in receipts],
    }


def run_crash_writer(cfg: dict[str, Any]) -> None:
    ledger = open_ledger(cfg)
    prepared = ledger.appends.prepare_batch(json.loads(Path(cfg["events"]).read_text()))
    # Connect now (and learn the server pid on PostgreSQL) so the append is all that is left.
    with ledger.store.reader() as conn:
        pid = (
            conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            if ledger.store.dialect == "postgresql"
            else 0
        )
    print(f"ready {pid}", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")
    print("starting", flush=True)
    receipts = ledger.appends.append(prepared, "crash-writer")
    print(f"committed {receipts[0].seq} {receipts[-1].leaf_hash}", flush=True)
    time.sleep(300)  # the parent kills us
    raise SystemExit("not killed")


def run_pool_owner(cfg: dict[str, Any]) -> None:
    setup = dict(cfg["setup"])
    for key in ("keys_dir", "policy_file"):  # paths, as the ledger passes them
        if setup.get(key) is not None:
            setup[key] = Path(setup[key])
    release = (lambda: True) if cfg.get("fork") else None
    with WorkerPool(cfg["job"], setup, cfg["jobs"], release=release) as pool:
        assert pool.forked == bool(cfg.get("fork"))
        print("workers", *(worker.pid for worker in pool.workers), flush=True)
        for _ in pool.map(cfg["tasks"]):
            pass
    print("done", flush=True)


def main(argv: list[str]) -> None:
    command, config = argv
    cfg = json.loads(Path(config).read_text())
    if command == "append":
        run_appender(cfg)
    elif command == "crash":
        run_crash_writer(cfg)
    elif command == "pool":
        run_pool_owner(cfg)
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
