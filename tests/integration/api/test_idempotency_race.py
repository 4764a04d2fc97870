"""Issue #12: one ``event_id`` submitted concurrently with two contents. Requests whose content
is what was finally stored got 409 "event_id is repeated in the batch with different content
(events[0])" — even on single-event ``POST /v1/events`` — because group commit failed them
against a sibling in the same group that had not committed (and then lost). DESIGN §4: the same
content again gets 200 and the original receipt; only the other content gets 409.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from audit_ledger.core.header import parse_leaf
from audit_ledger.errors import ConflictError
from audit_ledger.ledger.appends.group_commit import GroupCommitter
from audit_ledger.ledger.appends.write import Receipt
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.integration.api.conftest import make_server
from tests.support.factories import event

pytestmark = pytest.mark.timeout(300)


def _pair() -> tuple[dict[str, Any], dict[str, Any]]:
    """Two contents for one event_id (they differ in the header's event_type)."""
    a = event()
    b = {**a, "event_type": "payment_refunded"}
    return a, b


def test_a_request_waits_for_its_sibling_rather_than_failing_against_it(ledger: Ledger) -> None:
    """Deterministic: the committer gathers [B, A, B, A] for one event_id while another writer
    holds the head lock. B commits (first in the group); the B request after it is a replay,
    and each A is a 409 in single-event words, not a batch's."""
    a, b = _pair()
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ledger.store.writer() as tx:
            tx.head()
            locked.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(30)

    async def main() -> list[list[Receipt] | BaseException]:
        committer = GroupCommitter(ledger.appender)
        committer.start()
        try:
            futures = []
            for raw in (b, a, b, a):
                prepared = [ledger.appends.prepare(raw)]
                futures.append(asyncio.wrap_future(committer.submit(prepared, "bot")))
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            release.set()
            return list(await asyncio.gather(*futures, return_exceptions=True))
        finally:
            committer.stop()

    first_b, first_a, second_b, second_a = asyncio.run(main())
    holder.join(30)
    assert isinstance(first_b, list)
    assert isinstance(second_b, list)
    assert not first_b[0].replayed
    assert second_b[0].replayed
    assert second_b[0].seq == first_b[0].seq
    for outcome in (first_a, second_a):
        assert isinstance(outcome, ConflictError)
        assert "batch" not in str(outcome)
        assert outcome.index == 0  # its own (only) event, not a place in someone else's group
    assert ledger.verification.run(jobs=1).ok


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[Any]:
    server = make_server(settings, tmp_path, workers=2)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.process
def test_concurrent_conflicting_submissions_on_two_workers(
    two_workers: Any, ledger: Ledger
) -> None:
    """24 connections on 2 workers, one event_id per round, half send A and half B (single
    events; every fourth client a one-event batch). What matches the stored content gets 201
    (exactly one) or 200 with the original receipt; only the other content gets 409, and a
    single-event 409 never speaks of a batch."""
    headers = two_workers.headers("writer")
    rounds = 12
    clients = 24
    outcomes: list[tuple[int, str, bool, int, Any]] = []  # round, content, batch, status, body

    async def main() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(
            base_url=two_workers.url, headers=headers, timeout=60, limits=limits
        ) as http:

            async def send(n: int, raw: dict[str, Any], content: str, r: int) -> None:
                batch = n % 4 == 3
                if batch:
                    response = await http.post("/v1/events/batch", json={"events": [raw]})
                else:
                    response = await http.post("/v1/events", json=raw)
                outcomes.append((r, content, batch, response.status_code, response.json()))

            for r in range(rounds):
                a, b = _pair()
                a["event_id"] = b["event_id"] = str(uuid.uuid4())
                await asyncio.gather(
                    *(
                        send(n, a if n % 2 == 0 else b, "a" if n % 2 == 0 else "b", r)
                        for n in range(clients)
                    )
                )
                outcomes.append((r, "id", False, 0, a["event_id"]))

    asyncio.run(main())
    ids = {r: body for r, kind, _, _, body in outcomes if kind == "id"}
    wanted = set(ids.values())
    stored = {
        e.event_id: e
        for e in ledger.store.entries_between(0, ledger.log.size())
        if e.event_id in wanted
    }
    assert len(stored) == rounds
    wrong: list[str] = []
    for r, content, batch, status, body in outcomes:
        if content == "id":
            continue
        winner = "b" if parse_leaf(stored[ids[r]].leaf).event_type == "payment_refunded" else "a"
        expected = {201, 200} if content == winner else {409}
        if status not in expected:
            wrong.append(f"round {r}: {content} (stored {winner}) got {status}: {body}")
        if status == 409 and not batch and ("batch" in body["detail"] or "[" in body["detail"]):
            wrong.append(f"round {r}: single-event 409 in batch words: {body['detail']}")
    assert not wrong, "\n".join(wrong[:10]) + f"\n({len(wrong)} in all)"
    created = [o for o in outcomes if o[3] == 201]
    assert len(created) == rounds  # exactly one 201 per event_id
    assert ledger.verification.run(jobs=1).ok
