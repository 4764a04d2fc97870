"""Pure logic of :mod:`audit_ledger.client`: category mapping, local checks, the retry policy.

The retry policy is exercised against ``httpx.MockTransport`` (no server); everything about
real server behaviour is in ``tests/integration/api/test_client.py``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import pytest

from audit_ledger.client import (
    AuditLedgerClient,
    AuthError,
    ClientError,
    ConflictError,
    ForbiddenError,
    InvalidEventError,
    NotFoundError,
    PayloadTooLargeError,
    Receipt,
    ServerError,
    ServerUnavailable,
    UnknownEventTypeError,
    category_for,
    correlation_id_var,
    format_occurred_at,
    parse_retry_after,
    to_json_value,
)

TOKEN = "al_secret-token-value-1234567890"
PAYMENT: dict[str, Any] = {
    "user_id": 4242,
    "amount": 150000,
    "payment_method": "qris",
    "order_id": "ORD-1",
}


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def receipt_json(event_id: str, seq: int = 0) -> dict[str, Any]:
    return {
        "seq": seq,
        "event_id": event_id,
        "leaf_hash": "ab" * 32,
        "recorded_at": "2026-11-28T03:55:17.123456Z",
    }


def problem(status: int, detail: str = "no", **extra: Any) -> httpx.Response:
    body = {"type": "urn:audit-ledger:problem:x", "title": "t", "status": status, "detail": detail}
    return httpx.Response(
        status, json={**body, **extra}, headers={"Content-Type": "application/problem+json"}
    )


class Recorder:
    """A scripted server: each request gets the next answer; bodies and sleeps are kept."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[..., httpx.Response]):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self, **kwargs: Any) -> AuditLedgerClient:
        options: dict[str, Any] = {"max_retries": 5, "backoff": 0.2}
        options.update(kwargs)
        return AuditLedgerClient(
            "http://ledger.test",
            TOKEN,
            transport=httpx.MockTransport(self.handler),
            sleep=self.sleep,
            **options,
        )

    def bodies(self) -> list[bytes]:
        return [r.content for r in self.requests]


def echo_receipt(status: int = 201) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return httpx.Response(status, json=receipt_json(body["event_id"]))

    return answer


def echo_batch(request: httpx.Request) -> httpx.Response:
    events = json.loads(request.content)["events"]
    return httpx.Response(
        201, json={"receipts": [receipt_json(e["event_id"], i) for i, e in enumerate(events)]}
    )


async def submit_one(rec: Recorder, **kwargs: Any) -> Receipt:
    async with rec.client(**kwargs) as client:
        return await client.log_compliance_event("payment_completed", **PAYMENT)


# --- category mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "category"),
    [
        ("payment_completed", "financial_transactions"),
        ("refund_issued", "financial_transactions"),
        ("order_paid", "financial_transactions"),
        ("Payment_Failed", "financial_transactions"),
        ("consent_granted", "data_privacy_events"),
        ("data_exported", "data_privacy_events"),
        ("privacy_request", "data_privacy_events"),
        ("erasure_requested", "data_privacy_events"),
        ("login_failed", "security_events"),
        ("auth_token_revoked", "security_events"),
        ("access_denied", "security_events"),
        ("security_alert", "security_events"),
        ("permission_changed", "security_events"),
    ],
)
def test_category_mapping(event_type: str, category: str) -> None:
    assert category_for(event_type) == category


@pytest.mark.parametrize("event_type", ["order_created", "paymentcompleted", "shipped", ""])
def test_unknown_event_type_is_a_domain_error(event_type: str) -> None:
    with pytest.raises(UnknownEventTypeError) as info:
        category_for(event_type)
    assert isinstance(info.value, ClientError)
    assert not isinstance(info.value, ValueError)
    assert info.value.fields == ["event_type"]
    assert "category=" in str(info.value)


def test_custom_rules_come_first_and_explicit_category_wins() -> None:
    client = AuditLedgerClient(
        "http://x", TOKEN, category_rules={"order_*": "financial_transactions"}
    )
    try:
        assert client.category_for("order_created") == "financial_transactions"
        assert client.category_for("login_ok") == "security_events"
        event = client.build_event("shipped", category="security_events", x=1)
        assert event["category"] == "security_events"
    finally:
        run(client.aclose())


# --- building events ----------------------------------------------------------------------------


def build(**kwargs: Any) -> dict[str, Any]:
    client = AuditLedgerClient("http://x", TOKEN)
    try:
        return client.build_event("payment_completed", **kwargs)
    finally:
        run(client.aclose())


def test_build_event_fills_envelope() -> None:
    event = build(**PAYMENT)
    assert set(event) == {
        "event_id",
        "category",
        "event_type",
        "occurred_at",
        "correlation_id",
        "data",
    }
    assert uuid.UUID(event["event_id"]).version == 4
    assert event["category"] == "financial_transactions"
    assert event["event_type"] == "payment_completed"
    assert event["data"] == PAYMENT
    assert len(event["correlation_id"]) == 32
    occurred = event["occurred_at"]
    assert occurred.endswith("Z")
    assert len(occurred.split(".")[1]) == 7  # 6 digits + Z
    parsed = datetime.fromisoformat(occurred.replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - parsed) < timedelta(seconds=5)


def test_build_event_uses_correlation_contextvar_and_explicit_values() -> None:
    token = correlation_id_var.set("update-77")
    try:
        assert build(**PAYMENT)["correlation_id"] == "update-77"
        assert build(correlation_id="explicit", **PAYMENT)["correlation_id"] == "explicit"
    finally:
        correlation_id_var.reset(token)
    eid = uuid.uuid4()
    event = build(event_id=eid, occurred_at="2026-11-28T10:55:17+07:00", **PAYMENT)
    assert event["event_id"] == str(eid)
    assert event["occurred_at"] == "2026-11-28T10:55:17+07:00"


def test_occurred_at_datetime_is_normalised_to_utc_microseconds() -> None:
    wib = timezone(timedelta(hours=7))
    moment = datetime(2026, 11, 28, 10, 55, 17, tzinfo=wib)
    assert format_occurred_at(moment) == "2026-11-28T03:55:17.000000Z"
    with pytest.raises(InvalidEventError) as info:
        format_occurred_at(datetime(2026, 11, 28))  # noqa: DTZ001 - the naive case is the test
    assert info.value.fields == ["occurred_at"]


def test_decimal_becomes_a_decimal_string() -> None:
    assert to_json_value(Decimal("150000.00")) == "150000.00"
    assert to_json_value(Decimal("1E+3")) == "1000"
    assert to_json_value({"a": [Decimal("-0.5"), 1, "x", None, True]}) == {
        "a": ["-0.5", 1, "x", None, True]
    }
    event = build(**{**PAYMENT, "amount": Decimal("150000.50")})
    assert event["data"]["amount"] == "150000.50"


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"amount": 150000.0}, "data.amount"),
        ({"items": [{"price": 1.5}]}, "data.items[0].price"),
        ({"amount": Decimal("NaN")}, "data.amount"),
        ({"amount": 2**53}, "data.amount"),
        ({"when": datetime.now(UTC)}, "data.when"),
    ],
)
def test_unsendable_values_are_refused_locally(value: dict[str, Any], field: str) -> None:
    rec = Recorder(echo_receipt())

    async def go() -> None:
        async with rec.client() as client:
            await client.log_compliance_event("payment_completed", **{**PAYMENT, **value})

    with pytest.raises(InvalidEventError) as info:
        run(go())
    assert info.value.fields == [field]
    assert info.value.status is None
    assert rec.requests == []  # nothing was sent
    assert "150000" not in str(info.value)  # the value itself is never echoed


def test_submit_refuses_floats_too() -> None:
    rec = Recorder(echo_receipt())

    async def go() -> None:
        async with rec.client() as client:
            await client.submit({"event_id": str(uuid.uuid4()), "data": {"amount": 1.0}})

    with pytest.raises(InvalidEventError, match=r"data\.amount"):
        run(go())
    assert rec.requests == []


# --- retry policy -------------------------------------------------------------------------------


def test_success_and_replay_receipts() -> None:
    rec = Recorder(echo_receipt(201), echo_receipt(200))

    async def go() -> tuple[Receipt, Receipt]:
        async with rec.client() as client:
            event = client.build_event("payment_completed", **PAYMENT)
            return await client.submit(event), await client.submit(event)

    first, again = run(go())
    assert (first.replayed, again.replayed) == (False, True)
    assert first.event_id == again.event_id
    request = rec.requests[0]
    assert request.url.path == "/v1/events"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_transient_statuses_are_retried_with_the_same_body(status: int) -> None:
    rec = Recorder(problem(status), problem(status), echo_receipt())
    receipt = run(submit_one(rec))
    assert len(rec.requests) == 3
    assert len(set(rec.bodies())) == 1  # byte-identical resend: same event_id
    assert receipt.event_id == json.loads(rec.bodies()[0])["event_id"]
    assert len(rec.sleeps) == 2


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("reset"),
    ],
)
def test_transport_errors_are_retried(error: Exception) -> None:
    rec = Recorder(error, error, echo_receipt(200))
    receipt = run(submit_one(rec))
    assert receipt.replayed  # the first attempt had landed after all: the server replays
    assert len(set(rec.bodies())) == 1
    assert len(rec.requests) == 3


def test_backoff_is_exponential_jittered_and_capped() -> None:
    rec = Recorder(httpx.ConnectError("refused"))
    with pytest.raises(ServerUnavailable) as info:
        run(submit_one(rec, max_retries=8, backoff=0.2, max_backoff=5.0))
    assert len(rec.requests) == 9
    ceilings = [min(5.0, 0.2 * 2**n) for n in range(8)]
    assert len(rec.sleeps) == 8
    for slept, ceiling in zip(rec.sleeps, ceilings, strict=True):
        assert ceiling / 2 <= slept <= ceiling
    assert "9 attempts" in str(info.value)
    assert "ConnectError" in str(info.value)


def test_retry_after_is_honoured_and_capped() -> None:
    later = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    rec = Recorder(
        httpx.Response(503, headers={"Retry-After": "5"}),
        httpx.Response(429, headers={"Retry-After": "3600"}),
        httpx.Response(503, headers={"Retry-After": later}),
        echo_receipt(),
    )
    run(submit_one(rec, max_retry_after=60.0))
    assert rec.sleeps[0] == 5.0
    assert rec.sleeps[1] == 60.0
    assert 25.0 <= rec.sleeps[2] <= 30.0


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("\u00b2") is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:10 GMT", now) == 10.0
    assert parse_retry_after("Wed, 31 Dec 2025 00:00:00 GMT", now) == 0.0


def test_retries_exhausted_raise_server_unavailable() -> None:
    rec = Recorder(problem(503))
    with pytest.raises(ServerUnavailable) as info:
        run(submit_one(rec, max_retries=2))
    assert len(rec.requests) == 3
    assert isinstance(info.value, ClientError)
    assert info.value.status == 503
    assert "HTTP 503" in str(info.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, AuthError),
        (403, ForbiddenError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, PayloadTooLargeError),
        (415, ClientError),
        (422, InvalidEventError),
        (500, ServerError),
    ],
)
def test_decisions_are_never_retried(status: int, error: type[ClientError]) -> None:
    rec = Recorder(problem(status, "because"))
    with pytest.raises(error) as info:
        run(submit_one(rec))
    assert len(rec.requests) == 1
    assert rec.sleeps == []
    assert info.value.status == status
    assert info.value.problem_type == "urn:audit-ledger:problem:x"
    assert f"HTTP {status}: because" in str(info.value)


def test_invalid_event_carries_the_problem_errors() -> None:
    errors = [{"field": "data.order_id", "problem": "required"}]
    rec = Recorder(problem(422, "event is invalid", errors=errors))
    with pytest.raises(InvalidEventError) as info:
        run(submit_one(rec))
    assert info.value.errors == errors
    assert info.value.fields == ["data.order_id"]
    assert "data.order_id (required)" in str(info.value)


def test_non_json_error_body_still_maps() -> None:
    rec = Recorder(httpx.Response(403, text="<html>nope</html>"))
    with pytest.raises(ForbiddenError, match="HTTP 403: Forbidden"):
        run(submit_one(rec))


def test_malformed_receipt_is_a_server_error() -> None:
    rec = Recorder(httpx.Response(201, json={"seq": "0"}))
    with pytest.raises(ServerError, match="malformed receipt"):
        run(submit_one(rec))


# --- batches ------------------------------------------------------------------------------------


def test_batches_are_chunked_at_batch_size() -> None:
    rec = Recorder(echo_batch)

    async def go() -> list[Receipt]:
        async with rec.client() as client:
            events = [client.build_event("login_failed", n=n) for n in range(2500)]
            return await client.submit_batch(events)

    receipts = run(go())
    assert len(receipts) == 2500
    sizes = [len(json.loads(body)["events"]) for body in rec.bodies()]
    assert sizes == [1000, 1000, 500]
    assert all(r.url.path == "/v1/events/batch" for r in rec.requests)


def test_empty_batch_sends_nothing() -> None:
    rec = Recorder(echo_batch)

    async def go() -> list[Receipt]:
        async with rec.client() as client:
            return await client.submit_batch([])

    assert run(go()) == []
    assert rec.requests == []


def test_batch_error_indexes_refer_to_the_whole_list() -> None:
    errors = [{"field": "events[2].data.outcome", "problem": "required"}]
    rec = Recorder(echo_batch, problem(422, "batch is invalid", errors=errors))

    async def go() -> None:
        async with rec.client(batch_size=10) as client:
            events = [client.build_event("login_failed", n=n) for n in range(15)]
            await client.submit_batch(events)

    with pytest.raises(InvalidEventError) as info:
        run(go())
    assert info.value.fields == ["events[12].data.outcome"]


def test_batch_conflict_detail_index_is_shifted() -> None:
    rec = Recorder(echo_batch, problem(409, "event_id reused (events[3])"))

    async def go() -> None:
        async with rec.client(batch_size=4) as client:
            events = [client.build_event("login_failed", n=n) for n in range(8)]
            await client.submit_batch(events)

    with pytest.raises(ConflictError, match=r"events\[7\]"):
        run(go())
    assert len(rec.requests) == 2


def test_bad_event_in_a_batch_fails_before_anything_is_sent() -> None:
    rec = Recorder(echo_batch)

    async def go() -> None:
        async with rec.client(batch_size=2) as client:
            events = [client.build_event("login_failed", n=n) for n in range(5)]
            events[4]["data"]["amount"] = 1.25
            await client.submit_batch(events)

    with pytest.raises(InvalidEventError) as info:
        run(go())
    assert info.value.fields == ["events[4].data.amount"]
    assert rec.requests == []


def test_batch_retries_resend_the_same_chunk() -> None:
    rec = Recorder(echo_batch, httpx.ConnectError("refused"), echo_batch)

    async def go() -> list[Receipt]:
        async with rec.client(batch_size=3) as client:
            events = [client.build_event("login_failed", n=n) for n in range(6)]
            return await client.submit_batch(events)

    assert len(run(go())) == 6
    bodies = rec.bodies()
    assert len(bodies) == 3
    assert bodies[1] == bodies[2]


# --- secrets ------------------------------------------------------------------------------------


def test_token_never_in_repr_or_errors() -> None:
    rec = Recorder(problem(401), httpx.ConnectError("refused"))
    client = rec.client(max_retries=0)
    assert TOKEN not in repr(client)
    assert "ledger.test" in repr(client)

    async def go() -> list[str]:
        messages = []
        for _ in range(2):
            try:
                await client.log_compliance_event("payment_completed", **PAYMENT)
            except ClientError as exc:
                messages.append(f"{exc!s} {exc!r} {exc.detail}")
        await client.aclose()
        return messages

    messages = run(go())
    assert len(messages) == 2
    assert all(TOKEN not in m for m in messages)


def test_constructor_checks() -> None:
    with pytest.raises(ClientError):
        AuditLedgerClient("http://x", "")
    with pytest.raises(ClientError) as info:
        AuditLedgerClient("http://x", "has space")
    assert "has space" not in str(info.value)
    with pytest.raises(ClientError):
        AuditLedgerClient("http://x", TOKEN, max_retries=-1)
    with pytest.raises(ClientError):
        AuditLedgerClient("http://x", TOKEN, batch_size=0)


def test_reads() -> None:
    rec = Recorder(
        problem(404, "no checkpoint yet"),
        httpx.Response(200, text="origin\n1\nAAAA\n\n\u2014 origin sig\n"),
        httpx.Response(200, text="origin+01234567+AQID\n"),
    )

    async def go() -> tuple[str | None, str | None, str]:
        async with rec.client() as client:
            return (
                await client.get_checkpoint(),
                await client.get_checkpoint(),
                await client.verifier_key(),
            )

    missing, note, key = run(go())
    assert missing is None
    assert note is not None
    assert note.startswith("origin\n1\n")
    assert key == "origin+01234567+AQID"
    assert [r.url.path for r in rec.requests] == [
        "/v1/log/checkpoint",
        "/v1/log/checkpoint",
        "/v1/log/verifier-key",
    ]


def test_iter_events_follows_cursors_with_ids_in_the_body() -> None:
    pages = iter(
        [
            {"events": [{"seq": 0}, {"seq": 1}], "next_cursor": "c1"},
            {"events": [{"seq": 2}], "next_cursor": None},
        ]
    )
    rec = Recorder(lambda request: httpx.Response(200, json=next(pages)))

    async def go() -> list[int]:
        async with rec.client() as client:
            return [e["seq"] async for e in client.iter_events(user_id=4242, page_size=2)]

    assert run(go()) == [0, 1, 2]
    bodies = [json.loads(b) for b in rec.bodies()]
    assert bodies == [{"user_id": 4242, "limit": 2}, {"user_id": 4242, "limit": 2, "cursor": "c1"}]
    assert all("4242" not in str(r.url) for r in rec.requests)


# --- auditor reads ------------------------------------------------------------------------------


def test_leaves_and_proofs_are_decoded() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/log/leaves":
            assert dict(request.url.params) == {"start": "3", "end": "5"}
            leaves = [{"seq": 3, "leaf": "e30="}, {"seq": 4, "leaf": "eyJ2IjoxfQ=="}]
            return httpx.Response(200, json={"leaves": leaves})
        assert request.url.path in {"/v1/log/proof/inclusion", "/v1/log/proof/consistency"}
        return httpx.Response(200, json={"hashes": ["ab" * 32, "01" * 32]})

    async def calls() -> tuple[Any, ...]:
        async with Recorder(answer).client() as client:
            return (
                await client.get_leaves(3, 5),
                await client.inclusion_proof(3, 9),
                await client.consistency_proof(2, 9),
            )

    leaves, inclusion, consistency = run(calls())
    assert leaves == [(3, b"{}"), (4, b'{"v":1}')]
    assert inclusion == consistency == [b"\xab" * 32, b"\x01" * 32]


@pytest.mark.parametrize(
    "body",
    [
        {"leaves": "no"},
        {"leaves": [{"seq": "3", "leaf": "e30="}]},
        {"leaves": [{"seq": 3, "leaf": "not base64!"}]},
        {"leaves": [{"seq": True, "leaf": "e30="}]},
        [],
    ],
)
def test_malformed_leaves_are_a_server_error(body: Any) -> None:
    async def call() -> Any:
        async with Recorder(httpx.Response(200, json=body)).client() as client:
            return await client.get_leaves(0, 1)

    with pytest.raises(ServerError):
        run(call())


@pytest.mark.parametrize(
    "body", [{"hashes": ["AB" * 32]}, {"hashes": ["ab" * 31]}, {"hashes": "ab"}, {}]
)
def test_malformed_proofs_are_a_server_error(body: Any) -> None:
    async def call() -> Any:
        async with Recorder(httpx.Response(200, json=body)).client() as client:
            return await client.consistency_proof(1, 2)

    with pytest.raises(ServerError):
        run(call())


def test_auditor_reads_raise_typed_errors() -> None:
    async def call() -> Any:
        async with Recorder(problem(403)).client() as client:
            return await client.get_leaves(0, 1)

    with pytest.raises(ForbiddenError):
        run(call())
