"""``audit_ledger.client`` against a real ``audit-ledger serve`` (uvicorn subprocess).

Nothing here mocks the server: events travel over HTTP, land in the database and are checked
through the API and through the ledger itself.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import pytest

from audit_ledger.client import (
    AuditLedgerClient,
    AuthError,
    ConflictError,
    ForbiddenError,
    InvalidEventError,
    Receipt,
    UnknownEventTypeError,
    correlation_id_var,
)
from audit_ledger.ledger.reads import Query
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.conftest import ORIGIN
from tests.integration.api.conftest import LiveServer

T = TypeVar("T")

PAYMENT: dict[str, Any] = {
    "user_id": 4242,
    "amount": Decimal("150000.00"),
    "payment_method": "qris",
    "order_id": "ORD-2026-0001",
}
CONSENT: dict[str, Any] = {
    "user_id": 4242,
    "data_type": "phone_number",
    "action": "collect",
    "consent_status": "granted",
}
LOGIN: dict[str, Any] = {"user_id": 4242, "source_ip": "203.0.113.7", "outcome": "denied"}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class CountingTransport(httpx.AsyncBaseTransport):
    """A real HTTP transport that counts the requests that left the process."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.count = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.count += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def client(server: LiveServer, role: str, **kwargs: Any) -> AuditLedgerClient:
    return AuditLedgerClient(server.url, server.tokens[role], **kwargs)


def all_headers(settings: Settings) -> tuple[list[dict[str, Any]], int, bool]:
    """Every header in the log (read through the ledger itself), the log size, verify().ok."""
    ledger = Ledger.open(settings)
    try:
        headers: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = ledger.reads.page_for(["auditor"], Query(limit=1000, cursor=cursor))
            headers.extend(view.header for view in page.events)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        report = ledger.verification.run()
        return headers, ledger.log.size(), report.ok
    finally:
        ledger.close()


# --- logging per category -----------------------------------------------------------------------


def test_log_compliance_event_per_category(live_server: LiveServer) -> None:
    cases = [
        ("payment_completed", "financial_transactions", PAYMENT, "compliance_officer"),
        ("consent_granted", "data_privacy_events", CONSENT, "privacy_officer"),
        ("login_failed", "security_events", LOGIN, "security_team"),
    ]

    async def go() -> None:
        receipts: dict[str, Receipt] = {}
        async with client(live_server, "writer") as writer:
            token = correlation_id_var.set("tg-update-1001")
            try:
                for event_type, category, fields, _ in cases:
                    receipts[category] = await writer.log_compliance_event(event_type, **fields)
            finally:
                correlation_id_var.reset(token)
            # An explicit category for a type the rules do not know.
            custom = await writer.log_compliance_event(
                "order_shipped_late", category="security_events", **LOGIN
            )
        assert not any(r.replayed for r in receipts.values())
        assert len({r.seq for r in receipts.values()}) == 3

        for event_type, category, fields, officer in cases:
            receipt = receipts[category]
            async with client(live_server, officer) as reader:
                entry = await reader.get_event(receipt.seq)
                assert entry["header"]["category"] == category
                assert entry["header"]["event_type"] == event_type
                assert entry["header"]["event_id"] == receipt.event_id
                assert entry["header"]["correlation_id"] == "tg-update-1001"
                assert entry["header"]["occurred_at"].endswith("Z")
                assert entry["leaf_hash"] == receipt.leaf_hash
                assert entry["payload_state"] == "present"
                expected = {k: str(v) if isinstance(v, Decimal) else v for k, v in fields.items()}
                assert entry["data"] == expected  # Decimal arrived as "150000.00"
                # Identifiers are searched through the blind index, in the request body.
                page = await reader.search(category=category, user_id=4242)
                assert receipt.seq in [e["seq"] for e in page["events"]]
            # The other officers may not read this category; the auditor sees headers only.
            for other in {"compliance_officer", "privacy_officer", "security_team"} - {officer}:
                async with client(live_server, other) as stranger:
                    with pytest.raises(ForbiddenError):
                        await stranger.get_event(receipt.seq)
            async with client(live_server, "auditor") as auditor:
                entry = await auditor.get_event(receipt.seq)
                assert entry["payload_state"] == "withheld"
                assert "data" not in entry

        async with client(live_server, "security_team") as security:
            entry = await security.get_event(custom.seq)
            assert entry["header"]["event_type"] == "order_shipped_late"

    run(go())


def test_batch_of_2500(live_server: LiveServer, settings: Settings) -> None:
    n = 2500

    async def go() -> None:
        async with client(live_server, "writer", timeout=60.0) as writer:
            events = [
                writer.build_event("login_failed", **{**LOGIN, "attempt": i}) for i in range(n)
            ]
            receipts = await writer.submit_batch(events)
            assert len(receipts) == n
            assert [r.event_id for r in receipts] == [e["event_id"] for e in events]
            seqs = [r.seq for r in receipts]
            assert seqs == sorted(seqs)
            assert len(set(seqs)) == n
            assert not any(r.replayed for r in receipts)

            # Resending the whole list (what a caller does after a failure) only replays.
            again = await writer.submit_batch(events)
            assert [r.seq for r in again] == seqs
            assert all(r.replayed for r in again)

        async with client(live_server, "auditor") as auditor:
            found = [
                e["header"]["event_id"]
                async for e in auditor.iter_events(category="security_events")
            ]
        assert Counter(found) == Counter(e["event_id"] for e in events)

    run(go())
    headers, _, ok = all_headers(settings)
    assert sum(h["category"] == "security_events" for h in headers) == n
    assert ok


# --- a restart mid-stream -----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_client_survives_server_restart_mid_stream(
    live_server: LiveServer, settings: Settings, sig: signal.Signals
) -> None:
    """The client survives a server restart mid-stream: every event lands exactly once."""
    total, stop_after, concurrency = 400, 100, 8
    acked: list[Receipt] = []
    timeline: dict[str, float] = {}

    async def go() -> list[dict[str, Any]]:
        halfway = asyncio.Event()
        async with client(
            live_server, "writer", max_retries=60, backoff=0.05, max_backoff=1.0, timeout=5.0
        ) as writer:
            events = [
                writer.build_event(
                    "payment_completed", **{**PAYMENT, "order_id": f"ORD-{i:04d}", "amount": i + 1}
                )
                for i in range(total)
            ]
            pending = iter(events)

            async def worker() -> None:
                for event in pending:  # one shared iterator: each event is sent by one worker
                    acked.append(await writer.submit(event))
                    if len(acked) >= stop_after:
                        halfway.set()

            async def chaos() -> None:
                await halfway.wait()
                timeline["stop"] = time.monotonic()
                timeline["acked_at_stop"] = len(acked)
                await asyncio.to_thread(live_server.stop, sig)
                await asyncio.sleep(1.0)
                await asyncio.to_thread(live_server.start)
                timeline["up"] = time.monotonic()

            await asyncio.gather(chaos(), *(worker() for _ in range(concurrency)))
            return events

    events = run(go())
    # The outage really happened mid-stream: most events were sent around or after it.
    assert "up" in timeline
    assert stop_after <= timeline["acked_at_stop"] < total // 2
    assert len(acked) == total
    ids = [e["event_id"] for e in events]
    assert sorted(r.event_id for r in acked) == sorted(ids)

    headers, size, ok = all_headers(settings)
    financial = Counter(h["event_id"] for h in headers if h["category"] == "financial_transactions")
    assert financial == Counter(ids)  # each event exactly once, none missing, none extra
    operations = sum(h["category"] == "ledger_operations" for h in headers)
    assert size == len(headers) == total + operations
    # A replayed receipt (the first attempt landed but its answer was lost) names the same entry.
    by_id = {h["event_id"]: h["seq"] for h in headers}
    assert all(by_id[r.event_id] == r.seq for r in acked)
    assert ok


# --- errors and reads ---------------------------------------------------------------------------


def test_auth_errors_and_log_reads(live_server: LiveServer, settings: Settings) -> None:
    async def go() -> None:
        async with client(live_server, "writer") as writer:
            with pytest.raises(ForbiddenError) as info:
                await writer.search(category="financial_transactions")
            assert info.value.status == 403
            assert isinstance(info.value, AuthError)
            with pytest.raises(ForbiddenError):
                await writer.get_event(0)
            # Public: anyone may fetch the verifier key.
            verifier = await writer.verifier_key()
        async with client(live_server, "revoked") as revoked:
            with pytest.raises(AuthError) as denied:
                await revoked.get_checkpoint()
            assert not isinstance(denied.value, ForbiddenError)
            assert denied.value.status == 401
            assert live_server.tokens["revoked"] not in str(denied.value)
        async with AuditLedgerClient(live_server.url, "al_not-a-real-token") as stranger:
            with pytest.raises(AuthError):
                await stranger.log_compliance_event("payment_completed", **PAYMENT)
        async with client(live_server, "compliance_officer") as officer:
            with pytest.raises(ForbiddenError):  # officers cannot append
                await officer.log_compliance_event("payment_completed", **PAYMENT)

        async with client(live_server, "auditor") as auditor:
            ledger = Ledger.open(settings)
            try:
                made = ledger.log.checkpoint()  # principals made the log non-empty
                assert made is not None
                assert verifier == ledger.log.verifier_key()
            finally:
                ledger.close()
            # The latest checkpoint: this one, or a later one if the scheduler made one since.
            note = await auditor.get_checkpoint()
            assert note is not None
            origin, size, _ = note.split("\n", 2)
            assert origin == ORIGIN
            assert int(size) >= made.tree_size
            assert f"\n\u2014 {ORIGIN} " in note  # the signed-note signature line

    run(go())


def test_event_errors_are_typed_and_never_retried(live_server: LiveServer) -> None:
    transport = CountingTransport()

    async def go() -> None:
        async with client(live_server, "writer", transport=transport) as writer:
            # Refused locally: nothing leaves the process.
            with pytest.raises(InvalidEventError) as local:
                await writer.log_compliance_event(
                    "payment_completed", **{**PAYMENT, "amount": 150000.0}
                )
            assert local.value.fields == ["data.amount"]
            assert local.value.status is None
            with pytest.raises(UnknownEventTypeError):
                await writer.log_compliance_event("parcel_delivered", **PAYMENT)
            assert transport.count == 0

            # Bypassing the local checks: the server's 422 names the failing fields.
            event = writer.build_event("payment_completed", **PAYMENT)
            del event["data"]["order_id"]
            with pytest.raises(InvalidEventError) as info:
                await writer.submit(event)
            assert info.value.status == 422
            assert "data.order_id" in info.value.fields
            assert info.value.problem_type == "urn:audit-ledger:problem:validation"
            assert transport.count == 1

            bad = [writer.build_event("login_failed", **LOGIN) for _ in range(3)]
            bad[2]["data"].pop("outcome")
            bad[1]["category"] = "ledger_operations"
            with pytest.raises(InvalidEventError) as batch_info:
                await writer.submit_batch(bad)
            assert set(batch_info.value.fields) == {"events[1].category", "events[2].data.outcome"}
            assert transport.count == 2

            # Same event_id, other content: 409, raised at once.
            event_id = str(uuid.uuid4())
            first = await writer.log_compliance_event(
                "payment_completed", event_id=event_id, **PAYMENT
            )
            assert first.event_id == event_id
            other = writer.build_event(
                "payment_completed", event_id=event_id, **{**PAYMENT, "amount": 1}
            )
            with pytest.raises(ConflictError) as conflict:
                await writer.submit(other)
            assert conflict.value.status == 409
            assert transport.count == 4

    run(go())
