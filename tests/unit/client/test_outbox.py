"""Outbox decisions that a healthy server never makes: a 5xx that persists is set aside after
``max_attempts`` (never retried forever), and receipts that do not name the events sent never
remove them. The server is an ``httpx.MockTransport`` scripted per request; everything a real
server does is tested in ``tests/integration/api/test_outbox*.py``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from audit_ledger.client import AuditLedgerClient, Outbox, ServerError

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def scripted(answer: Callable[[dict[str, object]], httpx.Response]) -> AuditLedgerClient:
    def handle(request: httpx.Request) -> httpx.Response:
        return answer(json.loads(request.content))

    return AuditLedgerClient(
        "http://ledger.test", "token", max_retries=0, transport=httpx.MockTransport(handle)
    )


def receipt(event_id: object, seq: int = 0) -> dict[str, object]:
    return {"seq": seq, "event_id": event_id, "leaf_hash": "0" * 64, "recorded_at": "x"}


def fill(outbox: Outbox, client: AuditLedgerClient, keys: range) -> list[str]:
    return [
        outbox.enqueue(
            client.build_event(
                "login_failed", idempotency_key=k, occurred_at=T0, user_id=k, outcome="denied"
            )
        )
        for k in keys
    ]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_a_persistent_5xx_is_set_aside_after_max_attempts(tmp_path: Path, batch_size: int) -> None:
    def answer(body: dict[str, object]) -> httpx.Response:
        if "events" in body:  # a batch holding the bad event fails whole
            return httpx.Response(500, json={"detail": "boom"})
        if body.get("data", {}).get("user_id") == 1:  # type: ignore[union-attr]
            return httpx.Response(500, json={"detail": "boom"})
        return httpx.Response(201, json=receipt(body["event_id"]))

    client = scripted(answer)
    outbox = Outbox(tmp_path / "o.sqlite3", batch_size=batch_size, max_attempts=3)
    ids = fill(outbox, client, range(3))

    async def go() -> None:
        for _ in range(2):  # attempts 1 and 2: raised, kept, nothing after it sent
            with pytest.raises(ServerError):
                await outbox.flush(client)
            assert outbox.pending() == 2  # the event before it went out
        report = await outbox.flush(client)  # attempt 3: set aside, the rest go on
        assert (report.sent, report.poisoned) == (1, 1)

    asyncio.run(go())
    [poison] = outbox.poisoned()
    assert (poison.event_id, poison.status) == (ids[1], 500)
    assert "after 3 attempts" in poison.problem
    assert outbox.pending() == 0
    outbox.close()


def test_receipts_that_do_not_match_remove_nothing(tmp_path: Path) -> None:
    def answer(body: dict[str, object]) -> httpx.Response:
        events = body["events"]
        assert isinstance(events, list)
        return httpx.Response(
            201, json={"receipts": [receipt(e["event_id"]) for e in events][::-1]}
        )

    client = scripted(answer)
    outbox = Outbox(tmp_path / "o.sqlite3")
    fill(outbox, client, range(3))
    with pytest.raises(ServerError, match="do not match"):
        asyncio.run(outbox.flush(client))
    assert outbox.pending() == 3
    outbox.close()
