"""Group commit (ledger.appends.group_commit): requests share transactions, never outcomes.

The committer locks the head first and only then takes the queued requests, writing without a
replay probe; a replay or a conflict in the group sends it down the ordinary path. These tests
drive the real committer against both backends in-process (a held head lock makes the gathering
deterministic), then a real two-worker server under concurrent clients.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from audit_ledger.errors import ConflictError
from audit_ledger.ledger.appends.group_commit import GroupCommitter
from audit_ledger.ledger.appends.write import Receipt
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.integration.api.conftest import make_server
from tests.support.factories import event

pytestmark = pytest.mark.timeout(180)


async def _awaitable(committer: GroupCommitter, events: Any, writer: str) -> Any:
    """Submit, and await the committer's future as the API does."""
    return await asyncio.wrap_future(committer.submit(events, writer))


def _submit_all(
    ledger: Ledger, requests: list[list[dict[str, Any]]]
) -> list[list[Receipt] | BaseException]:
    """Submit every request concurrently to one committer; each request's outcome."""

    async def main() -> list[list[Receipt] | BaseException]:
        committer = GroupCommitter(ledger.appender)
        committer.start()
        try:
            tasks = [
                asyncio.create_task(
                    _awaitable(committer, [ledger.appends.prepare(r) for r in raws], "bot")
                )
                for raws in requests
            ]
            return list(await asyncio.gather(*tasks, return_exceptions=True))
        finally:
            committer.stop()

    return asyncio.run(main())


def _ids(ledger: Ledger) -> list[str]:
    return [e.event_id for e in ledger.store.entries_between(0, ledger.log.size())]


def test_group_with_replays_and_a_conflict(ledger: Ledger) -> None:
    logged = event()
    [original] = ledger.appends.append([ledger.appends.prepare(logged)], "bot")
    clash = event()
    clash["event_id"] = logged["event_id"]  # same id, other content
    fresh = [event() for _ in range(4)]
    twice = event()
    outcomes = _submit_all(
        ledger,
        [[fresh[0]], [logged], [fresh[1], clash], [fresh[2]], [twice, fresh[3], twice]],
    )
    assert isinstance(outcomes[2], ConflictError)  # only the conflicting request fails...
    assert outcomes[2].index == 1  # ...naming its own event
    ok = [o for i, o in enumerate(outcomes) if i != 2]
    assert all(isinstance(o, list) for o in ok)
    replayed = outcomes[1]
    assert isinstance(replayed, list)
    assert replayed[0] == Receipt(
        original.seq, original.event_id, original.leaf_hash, original.recorded_at, True
    )
    repeated = outcomes[4]
    assert isinstance(repeated, list)
    assert repeated[2].seq == repeated[0].seq
    assert repeated[2].replayed
    # Nothing of the conflicting request, everything else exactly once.
    kept = [logged, fresh[0], fresh[2], twice, fresh[3]]
    assert sorted(_ids(ledger)) == sorted(r["event_id"] for r in kept)
    assert ledger.verification.run(jobs=1).ok


def _hold_head_lock(
    ledger: Ledger,
) -> tuple[threading.Event, threading.Event, threading.Thread]:
    """A thread holding the head lock (another writer's transaction) until released."""
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ledger.store.writer() as tx:
            tx.head()
            locked.set()
            release.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(30)
    return locked, release, thread


def test_requests_queued_while_waiting_for_the_lock_join_the_group(ledger: Ledger) -> None:
    """The first request's commit waits for the head lock (another writer holds it); the
    requests that arrive meanwhile commit in the same transaction."""
    _, release, holder = _hold_head_lock(ledger)
    later = [[event()] for _ in range(5)] + [[event(), event()]]

    async def main() -> list[list[Receipt]]:
        committer = GroupCommitter(ledger.appender)
        committer.start()
        try:
            first = asyncio.create_task(
                _awaitable(committer, [ledger.appends.prepare(event())], "bot")
            )
            await asyncio.sleep(0.5)  # its commit has started and waits for the lock
            rest = [
                asyncio.create_task(
                    _awaitable(committer, [ledger.appends.prepare(r) for r in raws], "bot")
                )
                for raws in later
            ]
            await asyncio.sleep(0.5)
            release.set()
            return list(await asyncio.gather(first, *rest))
        finally:
            committer.stop()

    outcomes = asyncio.run(main())
    holder.join(30)
    receipts = [r for o in outcomes for r in o]
    assert len(receipts) == 8
    # One transaction: one commit clock, contiguous seqs in submission order.
    assert len({r.recorded_at for r in receipts}) == 1
    assert [r.seq for r in receipts] == list(range(8))
    assert ledger.verification.run(jobs=1).ok


def test_a_failed_transaction_fails_its_waiters(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(type(ledger.store), "writer", broken)
    outcomes = _submit_all(ledger, [[event()], [event()]])
    assert all(isinstance(o, RuntimeError) for o in outcomes)


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[Any]:
    server = make_server(settings, tmp_path, workers=2)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.process
def test_two_workers_under_concurrent_clients(two_workers: Any, ledger: Ledger) -> None:
    """32 clients on a two-worker server: fresh events, replays and conflicts interleaved.
    Every acknowledged event is stored once, replays get the first receipt, the log verifies,
    and requests did share commits."""
    headers = two_workers.headers("writer")
    sent: dict[str, dict[str, Any]] = {}
    first: dict[str, dict[str, Any]] = {}
    conflicts = 0

    async def client(n: int) -> None:
        nonlocal conflicts
        async with httpx.AsyncClient(base_url=two_workers.url, headers=headers, timeout=60) as http:
            for i in range(15):
                raw = event()
                r = await http.post("/v1/events", json=raw)
                assert r.status_code == 201, r.text
                sent[raw["event_id"]] = raw
                first[raw["event_id"]] = r.json()
                if i % 5 == 4:  # the same event again: its first receipt, 200
                    again = await http.post("/v1/events", json=raw)
                    assert again.status_code == 200, again.text
                    assert again.json() == r.json()
                if i % 7 == 6 + n % 2:  # the same id with other content: 409
                    other = {**raw, "event_type": "other_type"}
                    clash = await http.post("/v1/events", json=other)
                    assert clash.status_code == 409, clash.text
                    conflicts += 1

    async def main() -> None:
        await asyncio.gather(*(client(n) for n in range(32)))

    asyncio.run(main())
    assert conflicts > 0
    ids = [e.event_id for e in ledger.store.entries_between(0, ledger.log.size())]
    assert len(ids) == len(set(ids))
    assert {e for e in ids if e in sent} == set(sent)
    assert len(sent) == 32 * 15
    for event_id, receipt in first.items():
        entry = ledger.store.entry(receipt["seq"])
        assert entry is not None
        assert entry.event_id == event_id
        assert entry.leaf_hash.hex() == receipt["leaf_hash"]
    assert ledger.verification.run(jobs=1).ok
    metrics = httpx.get(two_workers.url + "/metrics").text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("ledger_commit_group_events_")
    }
    appended = values["ledger_commit_group_events_sum"]
    commits = values["ledger_commit_group_events_count"]
    assert appended >= len(sent)  # (replays count in their group too)
    assert commits < appended  # requests shared transactions
    with ledger.store.reader() as conn:
        uses = conn.execute(text("SELECT sum(uses) FROM data_keys")).scalar_one()
    assert uses == ledger.log.size()  # one seal per entry (the principals' records included)
