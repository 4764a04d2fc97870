"""The bot's durable outbox (``audit_ledger.client.Outbox``) against the real application on
a socket (uvicorn in a thread of the test process), on both backends: order, batches, replays,
poison messages, two outboxes sharing one file, and rows kept whenever no receipt came.

The process-level guarantees (a killed ledger, a killed bot) are in ``test_outbox_processes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from audit_ledger.client import (
    AuditLedgerClient,
    AuthError,
    ConflictError,
    Outbox,
    ServerUnavailableError,
    derive_event_id,
)
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.integration.api.conftest import ThreadedServer, free_port

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def payment(i: int, amount: int | None = None) -> dict[str, Any]:
    return {
        "idempotency_key": f"INV-{i}",
        "occurred_at": T0 + timedelta(seconds=i),
        "user_id": i,
        "amount": 1000 * i if amount is None else amount,
        "payment_method": "qris",
        "order_id": f"ORD-{i}",
    }


def writer(server: ThreadedServer, token: str | None = None) -> AuditLedgerClient:
    return AuditLedgerClient(
        server.url, token or server.tokens["writer"], max_retries=1, backoff=0.01
    )


def logged_ids(settings: Settings) -> list[str]:
    ledger = Ledger.open(settings)
    try:
        size = ledger.log.size()
        return [
            json.loads(leaf)["event_id"]
            for start in range(0, size, 1000)
            for _, leaf in ledger.log.leaves(start, size)
            if json.loads(leaf)["event_type"] == "payment_completed"
        ]
    finally:
        ledger.close()


def ids(*numbers: int) -> list[str]:
    return [derive_event_id("payment_completed", f"INV-{i}") for i in numbers]


@pytest.fixture
def outbox(tmp_path: Path) -> Any:
    box = Outbox(tmp_path / "outbox.sqlite3", batch_size=10)
    yield box
    box.close()


def test_flush_sends_in_order_in_batches_and_a_redelivery_replays(
    socket_server: ThreadedServer, settings: Settings, outbox: Outbox
) -> None:
    async def go() -> None:
        async with writer(socket_server) as client:
            for i in range(25):
                await outbox.log(client, "payment_completed", **payment(i))
            assert outbox.pending() == 25
            report = await outbox.flush(client)
            assert (report.sent, report.replayed, report.poisoned) == (25, 0, 0)
            assert outbox.pending() == 0
            # Telegram delivers update 3 again after the bot restarted: the same event.
            await outbox.log(client, "payment_completed", **payment(3))
            report = await outbox.flush(client)
            assert (report.sent, report.replayed) == (0, 1)

    asyncio.run(go())
    assert logged_ids(settings) == ids(*range(25))
    assert (Path(outbox.path).stat().st_mode & 0o777) == 0o600  # plaintext events inside


def test_a_conflict_is_set_aside_loudly_and_the_rest_lands(
    socket_server: ThreadedServer,
    settings: Settings,
    outbox: Outbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        async with writer(socket_server) as client:
            # Invoice 5 is already in the ledger with another amount.
            await client.log_compliance_event("payment_completed", **payment(5, amount=1))
            for i in (4, 5, 6):
                await outbox.log(client, "payment_completed", **payment(i))
            with caplog.at_level(logging.ERROR, logger="audit_ledger.client.outbox"):
                report = await outbox.flush(client)
            assert (report.sent, report.poisoned) == (2, 1)

    asyncio.run(go())
    assert outbox.pending() == 0
    [poison] = outbox.poisoned()
    assert poison.event_id == ids(5)[0]
    assert poison.status == 409
    assert json.loads(poison.body)["data"]["amount"] == 5000  # kept verbatim for an operator
    assert "5000" not in poison.problem
    [record] = [r for r in caplog.records if "REFUSED" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert ids(5)[0] in record.getMessage()
    assert logged_ids(settings) == ids(5, 4, 6)


def test_enqueue_is_durable_and_refuses_other_content_under_a_queued_id(
    tmp_path: Path, outbox: Outbox
) -> None:
    client = AuditLedgerClient("http://127.0.0.1:9", "token")
    event = client.build_event("payment_completed", **payment(1))
    assert outbox.enqueue(event) == ids(1)[0]
    assert outbox.enqueue(event) == ids(1)[0]  # the same bytes again: a no-op
    with pytest.raises(ConflictError):
        outbox.enqueue(client.build_event("payment_completed", **payment(1, amount=2)))
    # Committed to the file, not held in memory: another connection sees exactly one row.
    with contextlib.closing(sqlite3.connect(outbox.path)) as db:
        rows = db.execute("SELECT event_id, body FROM outbox").fetchall()
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [(r[0], json.loads(r[1])["data"]["amount"]) for r in rows] == [(ids(1)[0], 1000)]
    reopened = Outbox(outbox.path)
    try:
        assert reopened.pending() == 1
    finally:
        reopened.close()


def test_two_outboxes_on_one_file_flush_one_at_a_time(
    socket_server: ThreadedServer, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "shared.sqlite3"
    first, second = Outbox(path, batch_size=3), Outbox(path, batch_size=3)

    async def go() -> None:
        async with writer(socket_server) as client:
            for i in range(20):
                await (first if i % 2 else second).log(client, "payment_completed", **payment(i))
            with first._flush_lock() as held:  # the real lock, held meanwhile
                assert held
                assert (await second.flush(client)).busy
            assert second.pending() == 20
            reports = await asyncio.gather(first.flush(client), second.flush(client))
            assert sum(r.sent for r in reports) == 20
            assert sum(r.replayed for r in reports) == 0

    try:
        asyncio.run(go())
    finally:
        first.close()
        second.close()
    assert logged_ids(settings) == ids(*range(20))


def test_rows_stay_when_no_receipt_comes(
    socket_server: ThreadedServer, settings: Settings, outbox: Outbox
) -> None:
    async def go() -> None:
        async with writer(socket_server, socket_server.tokens["revoked"]) as revoked:
            await outbox.log(revoked, "payment_completed", **payment(1))
            await outbox.log(revoked, "payment_completed", **payment(2))
            with pytest.raises(AuthError):
                await outbox.flush(revoked)
        down = AuditLedgerClient(f"http://127.0.0.1:{free_port()}", "t", max_retries=1, backoff=0)
        async with down:
            with pytest.raises(ServerUnavailableError):
                await outbox.flush(down)
        assert outbox.pending() == 2
        async with writer(socket_server) as client:
            assert (await outbox.flush(client)).sent == 2

    asyncio.run(go())
    assert outbox.poisoned() == []
    assert logged_ids(settings) == ids(1, 2)
