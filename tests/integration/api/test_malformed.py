"""Malformed input on every endpoint → a 4xx problem+json, never a 5xx (DESIGN §4).

Every case runs against the application in the test process on both backends (the one that
writes raw HTTP against it on a real socket). Bad values carry a canary string and no
error body may contain it: submitted values are never echoed back. A batch with one bad event
writes nothing.
"""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from audit_ledger.ledger.service import Ledger
from tests.integration.api.conftest import ThreadedServer
from tests.support.api import assert_problem, open_ledger, records_read_count
from tests.support.factories import event
from tests.support.servers import InProcessServer, module_app_server

CANARY = "k4n4ry" + uuid.uuid4().hex
UUID = "0b6c6f3e-5f5e-4d5c-9c1a-3f0e2d1c0b0a"
MiB = 1024 * 1024

server = module_app_server()


@pytest.fixture(scope="module")
def probe(server: InProcessServer) -> Iterator[Ledger]:
    """An in-process ledger on the server's database, to look at the log without the API."""
    with open_ledger(server.settings) as ledger:
        yield ledger


@dataclass(frozen=True)
class Case:
    """One bad request and the status it must get."""

    id: str
    status: int
    method: str = "POST"
    path: str = "/v1/events"
    role: str | None = "writer"
    json: Any = None
    content: bytes | None = None
    params: dict[str, Any] | list[tuple[str, Any]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: 422 must name this field (``errors[].field``), if given
    field: str | None = None


def ev(category: str = "financial_transactions", /, **changes: Any) -> dict[str, Any]:
    """A valid event with top-level members replaced (``None`` → removed)."""
    raw = event(category)
    for name, value in changes.items():
        if value is None:
            raw.pop(name, None)
        else:
            raw[name] = value
    return raw


def data(category: str = "financial_transactions", /, **fields: Any) -> dict[str, Any]:
    """A valid event with data fields replaced (``None`` → removed)."""
    raw = event(category)
    for name, value in fields.items():
        if value is None:
            raw["data"].pop(name)
        else:
            raw["data"][name] = value
    return raw


def nested(depth: int) -> Any:
    value: Any = CANARY
    for _ in range(depth):
        value = {"x": value}
    return value


def deep_data(depth: int) -> bytes:
    """A valid event whose data holds objects nested ``depth`` deep (too deep to json.dumps)."""
    text = json.dumps(event())[:-2]
    opening, closing = '{"x": ' * depth, "}" * depth
    return f'{text}, "deep": {opening}"{CANARY}"{closing}}}}}'.encode()


def raw_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _valid_text() -> str:
    return json.dumps(event())


C = CANARY
EVENT_CASES = [
    # not JSON at all, or JSON we refuse
    Case("invalid-json", 422, content=b'{"event_id": "' + C.encode(), field="body"),
    Case("trailing-garbage", 422, content=raw_json(event()) + b" " + C.encode(), field="body"),
    Case("empty-body", 422, content=b"", field="body"),
    Case("not-utf8", 422, content=b'{"event_id": "\xff\xfe' + C.encode() + b'"}', field="body"),
    Case("utf16", 422, content=_valid_text().encode("utf-16")),
    Case("bom", 422, content=b"\xef\xbb\xbf" + _valid_text().encode()),
    Case(
        "duplicate-key",
        422,
        content=_valid_text()[:-1].encode() + b', "event_id": "' + C.encode() + b'"}',
        field="body",
    ),
    Case(
        "duplicate-key-in-data",
        422,
        content=_valid_text()[:-2].encode() + b', "order_id": "' + C.encode() + b'"}}',
        field="body",
    ),
    Case("nan", 422, content=_valid_text()[:-2].encode() + b', "n": NaN}}', field="body"),
    Case("infinity", 422, content=_valid_text()[:-2].encode() + b', "n": -Infinity}}'),
    Case("lone-surrogate", 422, content=_valid_text()[:-2].encode() + b', "n": "\\ud800"}}'),
    Case("lone-surrogate-key", 422, content=_valid_text()[:-2].encode() + b', "\\udfff": 1}}'),
    Case("deep-nesting-json", 422, content=b"[" * 100_000 + b"]" * 100_000),
    Case("deep-nesting-data-2000", 422, content=deep_data(2000), field="body"),
    Case("deep-nesting-data-900", 422, content=deep_data(900), field="data"),
    Case("deep-nesting-data-300", 422, content=deep_data(300), field="data"),
    Case("nesting-33-levels", 422, json=data(deep=nested(32)), field="data"),
    Case(
        "nesting-33-levels-list",
        422,
        json=data(deep=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[C]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
        field="data",
    ),
    Case("body-list", 422, json=[event()]),
    Case("body-string", 422, json=C),
    Case("body-null", 422, json=None, content=b"null"),
    Case("body-number", 422, content=b"42"),
    # wrong or missing envelope members
    Case("empty-object", 422, json={}, field="event_id"),
    *(
        Case(f"missing-{name}", 422, json=ev(**{name: None}), field=name)
        for name in ("event_id", "category", "event_type", "occurred_at", "data")
    ),
    Case("unknown-null-member", 422, content=raw_json(ev())[:-1] + b', "x": null}', field="x"),
    Case("unknown-member", 422, json=ev(extra=C), field="extra"),
    Case("unknown-member-seq", 422, json=ev(seq=1), field="seq"),
    Case("event-id-not-uuid", 422, json=ev(event_id=C), field="event_id"),
    Case("event-id-int", 422, json=ev(event_id=12345), field="event_id"),
    Case("event-id-no-hyphens", 422, json=ev(event_id=uuid.uuid4().hex), field="event_id"),
    Case("event-id-braces", 422, json=ev(event_id="{" + UUID + "}"), field="event_id"),
    Case("event-id-urn", 422, json=ev(event_id="urn:uuid:" + UUID), field="event_id"),
    Case("event-id-trailing-newline", 422, json=ev(event_id=UUID + "\n"), field="event_id"),
    Case("category-unknown", 422, json=ev(category=C), field="category"),
    Case("category-list", 422, json=ev(category=["financial_transactions"]), field="category"),
    Case("category-object", 422, json=ev(category={"a": C}), field="category"),
    Case("category-system", 422, json=ev(category="ledger_operations"), field="category"),
    Case("event-type-space", 422, json=ev(event_type=C + " x"), field="event_type"),
    Case("event-type-int", 422, json=ev(event_type=7), field="event_type"),
    Case("event-type-long", 422, json=ev(event_type="a" * 129), field="event_type"),
    Case("event-type-empty", 422, json=ev(event_type=""), field="event_type"),
    Case("occurred-at-garbage", 422, json=ev(occurred_at=C), field="occurred_at"),
    Case(
        "occurred-at-no-offset",
        422,
        json=ev(occurred_at="2026-11-28T10:55:17"),
        field="occurred_at",
    ),
    Case("occurred-at-date", 422, json=ev(occurred_at="2026-11-28"), field="occurred_at"),
    Case("occurred-at-int", 422, json=ev(occurred_at=1764300000), field="occurred_at"),
    Case("occurred-at-month-13", 422, json=ev(occurred_at="2026-13-01T00:00:00Z")),
    Case("occurred-at-feb-30", 422, json=ev(occurred_at="2026-02-30T00:00:00Z")),
    Case("occurred-at-leap-second", 422, json=ev(occurred_at="2026-12-31T23:59:60Z")),
    Case("occurred-at-year-0", 422, json=ev(occurred_at="0000-01-01T00:00:00Z")),
    Case("occurred-at-overflow", 422, json=ev(occurred_at="9999-12-31T23:59:59-23:59")),
    Case("occurred-at-underflow", 422, json=ev(occurred_at="0001-01-01T00:00:00+23:59")),
    Case("occurred-at-arabic-digits", 422, json=ev(occurred_at="٢٠٢٦-11-28T10:55:17Z")),
    Case("correlation-space", 422, json=ev(correlation_id=C + " x"), field="correlation_id"),
    Case("correlation-int", 422, json=ev(correlation_id=5), field="correlation_id"),
    Case("correlation-long", 422, json=ev(correlation_id="c" * 129), field="correlation_id"),
    Case("correlation-unicode", 422, json=ev(correlation_id="é" + C), field="correlation_id"),
    Case("correlation-empty", 422, json=ev(correlation_id=""), field="correlation_id"),
    # data: shape, floats, big integers, money, identifiers, size
    Case("data-string", 422, json=ev(data=C), field="data"),
    Case("data-list", 422, json=ev(data=[C]), field="data"),
    Case("data-int", 422, json=ev(data=1), field="data"),
    Case("money-float", 422, content=raw_json(data(amount=C)).replace(f'"{C}"'.encode(), b"1.5")),
    Case("money-exp", 422, content=raw_json(data(amount=C)).replace(f'"{C}"'.encode(), b"1e5")),
    Case(
        "money-neg-zero", 422, content=raw_json(data(amount=C)).replace(f'"{C}"'.encode(), b"-0.0")
    ),
    Case(
        "float-nested",
        422,
        content=raw_json(data(x=[1, {"y": C}])).replace(f'"{C}"'.encode(), b"0.1"),
    ),
    Case(
        "float-security",
        422,
        content=raw_json(data("security_events", n=C)).replace(f'"{C}"'.encode(), b"2.5"),
    ),
    Case("money-string-garbage", 422, json=data(amount=C), field="data.amount"),
    Case("money-string-exp", 422, json=data(amount="1e5"), field="data.amount"),
    Case("money-string-two-dots", 422, json=data(amount="1.2.3"), field="data.amount"),
    Case("money-string-spaces", 422, json=data(amount=" 15000"), field="data.amount"),
    Case("money-string-plus", 422, json=data(amount="+15000"), field="data.amount"),
    Case("money-bool", 422, json=data(amount=True), field="data.amount"),
    Case("money-list", 422, json=data(amount=[C]), field="data.amount"),
    Case("money-object", 422, json=data(amount={"idr": C}), field="data.amount"),
    Case("money-2-53", 422, json=data(amount=2**53)),
    Case("money-minus-2-53", 422, json=data(amount=-(2**53))),
    Case("int-2-64-nested", 422, json=data(x={"y": [2**64]})),
    Case(
        "int-huge-digits", 422, content=raw_json(data(x=C)).replace(f'"{C}"'.encode(), b"9" * 5000)
    ),
    Case("user-id-object", 422, json=data(user_id={"id": C}), field="data.user_id"),
    Case("user-id-bool", 422, json=data(user_id=False), field="data.user_id"),
    Case("user-id-empty", 422, json=data(user_id=""), field="data.user_id"),
    Case("user-id-missing", 422, json=data(user_id=None), field="data.user_id"),
    Case("missing-order-id", 422, json=data(order_id=None), field="data.order_id"),
    Case("privacy-missing-consent", 422, json=data("data_privacy_events", consent_status=None)),
    Case("security-missing-outcome", 422, json=data("security_events", outcome=None)),
    Case("data-too-big", 422, json=data(blob=C + "x" * 70_000), field="data"),
    # content type and size
    Case("text-plain", 415, content=_valid_text().encode(), headers={"Content-Type": "text/plain"}),
    Case(
        "form",
        415,
        content=b"a=" + C.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Case(
        "json-suffix",
        415,
        content=_valid_text().encode(),
        headers={"Content-Type": "application/jsonx"},
    ),
    Case(
        "multipart",
        415,
        content=b"--x--",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    ),
    Case("too-big", 413, content=b'{"data": "' + b"x" * (4 * MiB) + b'"}'),
    # unauthenticated garbage is a 401, not a 422
    Case("anonymous-garbage", 401, role=None, content=b"{" + C.encode()),
    Case("revoked-garbage", 401, role="revoked", content=b"{" + C.encode()),
    Case("reader-garbage", 403, role="auditor", content=b"{" + C.encode()),
    # methods and paths
    Case("put", 405, method="PUT", json=event()),
    Case("delete-entry", 405, method="DELETE", path="/v1/events/0"),
    Case("unknown-path", 404, method="GET", path="/v1/nothing-here"),
]

BATCH = "/v1/events/batch"
BATCH_CASES = [
    Case("batch-empty-object", 422, path=BATCH, json={}, field="events"),
    Case("batch-empty", 422, path=BATCH, json={"events": []}, field="events"),
    Case("batch-null", 422, path=BATCH, json={"events": None}, field="events"),
    Case("batch-string", 422, path=BATCH, json={"events": C}, field="events"),
    Case("batch-object", 422, path=BATCH, json={"events": {"0": event()}}, field="events"),
    Case("batch-list-body", 422, path=BATCH, json=[event()]),
    Case("batch-unknown-member", 422, path=BATCH, json={"events": [event()], "x": C}, field="x"),
    Case("batch-invalid-json", 422, path=BATCH, content=b'{"events": [' + C.encode()),
    Case(
        "batch-non-object-event", 422, path=BATCH, json={"events": [event(), C]}, field="events[1]"
    ),
    Case(
        "batch-one-bad",
        422,
        path=BATCH,
        json={"events": [event(), ev(event_id=C)]},
        field="events[1].event_id",
    ),
    Case(
        "batch-system-category",
        422,
        path=BATCH,
        json={"events": [ev(category="ledger_operations")]},
    ),
    Case(
        "batch-float",
        422,
        path=BATCH,
        content=raw_json({"events": [data(amount=C)]}).replace(f'"{C}"'.encode(), b"1.25"),
    ),
    Case("batch-over-max", 413, path=BATCH, json={"events": [{}] * 1001}),
    Case("batch-too-big", 413, path=BATCH, content=b'{"events": ["' + b"x" * (4 * MiB) + b'"]}'),
    Case(
        "batch-text-plain", 415, path=BATCH, content=b"{}", headers={"Content-Type": "text/plain"}
    ),
    Case("batch-reader", 403, path=BATCH, role="compliance_officer", json={"events": [event()]}),
]

SEARCH = "/v1/events/search"
SEARCH_CASES = [
    Case(
        "search-unknown-member", 422, path=SEARCH, role="auditor", json={"email": C}, field="email"
    ),
    Case("search-body-list", 422, path=SEARCH, role="auditor", json=[C]),
    Case("search-body-string", 422, path=SEARCH, role="auditor", json=C),
    Case(
        "search-invalid-json",
        422,
        path=SEARCH,
        role="auditor",
        content=b'{"user_id": "' + C.encode(),
    ),
    Case(
        "search-duplicate-key",
        422,
        path=SEARCH,
        role="auditor",
        content=b'{"user_id": 1, "user_id": "' + C.encode() + b'"}',
    ),
    Case(
        "search-category-int",
        422,
        path=SEARCH,
        role="auditor",
        json={"category": 3},
        field="category",
    ),
    Case(
        "search-category-unknown",
        422,
        path=SEARCH,
        role="auditor",
        json={"category": C},
        field="category",
    ),
    Case(
        "search-user-id-object",
        422,
        path=SEARCH,
        role="auditor",
        json={"user_id": {"x": C}},
        field="user_id",
    ),
    Case(
        "search-user-id-list",
        422,
        path=SEARCH,
        role="auditor",
        json={"user_id": [C]},
        field="user_id",
    ),
    Case(
        "search-user-id-bool",
        422,
        path=SEARCH,
        role="auditor",
        json={"user_id": True},
        field="user_id",
    ),
    Case("search-user-id-float", 422, path=SEARCH, role="auditor", content=b'{"user_id": 1.5}'),
    Case(
        "search-order-id-object",
        422,
        path=SEARCH,
        role="auditor",
        json={"order_id": {"x": C}},
        field="order_id",
    ),
    Case("search-limit-0", 422, path=SEARCH, role="auditor", json={"limit": 0}, field="limit"),
    Case(
        "search-limit-1001", 422, path=SEARCH, role="auditor", json={"limit": 1001}, field="limit"
    ),
    Case(
        "search-limit-negative", 422, path=SEARCH, role="auditor", json={"limit": -1}, field="limit"
    ),
    Case(
        "search-limit-string", 422, path=SEARCH, role="auditor", json={"limit": "10"}, field="limit"
    ),
    Case(
        "search-limit-bool", 422, path=SEARCH, role="auditor", json={"limit": True}, field="limit"
    ),
    Case(
        "search-limit-huge", 422, path=SEARCH, role="auditor", json={"limit": 2**62}, field="limit"
    ),
    Case(
        "search-since-garbage", 422, path=SEARCH, role="auditor", json={"since": C}, field="since"
    ),
    Case("search-since-int", 422, path=SEARCH, role="auditor", json={"since": 0}, field="since"),
    Case(
        "search-until-no-offset",
        422,
        path=SEARCH,
        role="auditor",
        json={"until": "2026-01-01T00:00:00"},
        field="until",
    ),
    Case(
        "search-reversed",
        422,
        path=SEARCH,
        role="auditor",
        json={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        field="until",
    ),
    Case(
        "search-cursor-garbage",
        422,
        path=SEARCH,
        role="auditor",
        json={"cursor": C},
        field="cursor",
    ),
    Case("search-cursor-int", 422, path=SEARCH, role="auditor", json={"cursor": 5}, field="cursor"),
    Case(
        "search-text-plain",
        415,
        path=SEARCH,
        role="auditor",
        content=b"{}",
        headers={"Content-Type": "text/plain"},
    ),
    Case(
        "search-too-big",
        413,
        path=SEARCH,
        role="auditor",
        content=b'{"user_id": "' + b"x" * (4 * MiB) + b'"}',
    ),
    Case("search-writer", 403, path=SEARCH, role="writer", json={}),
]


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


LIST = "/v1/events"
LIST_CASES = [
    Case("list-limit-0", 422, "GET", LIST, "auditor", params={"limit": 0}, field="limit"),
    Case("list-limit-1001", 422, "GET", LIST, "auditor", params={"limit": 1001}, field="limit"),
    Case("list-limit-negative", 422, "GET", LIST, "auditor", params={"limit": -5}, field="limit"),
    Case("list-limit-text", 422, "GET", LIST, "auditor", params={"limit": C}, field="limit"),
    Case("list-limit-float", 422, "GET", LIST, "auditor", params={"limit": "1.5"}, field="limit"),
    Case("list-limit-huge", 422, "GET", LIST, "auditor", params={"limit": "9" * 30}, field="limit"),
    Case("list-since-garbage", 422, "GET", LIST, "auditor", params={"since": C}, field="since"),
    Case("list-until-garbage", 422, "GET", LIST, "auditor", params={"until": C}, field="until"),
    Case(
        "list-since-no-offset", 422, "GET", LIST, "auditor", params={"since": "2026-01-01T00:00:00"}
    ),
    Case(
        "list-reversed",
        422,
        "GET",
        LIST,
        "auditor",
        params={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00+07:00"},
        field="until",
    ),
    Case(
        "list-category-unknown",
        422,
        "GET",
        LIST,
        "auditor",
        params={"category": C},
        field="category",
    ),
    Case(
        "list-category-empty",
        422,
        "GET",
        LIST,
        "auditor",
        params={"category": ""},
        field="category",
    ),
    Case("list-cursor-garbage", 422, "GET", LIST, "auditor", params={"cursor": C}, field="cursor"),
    Case(
        "list-cursor-negative",
        422,
        "GET",
        LIST,
        "auditor",
        params={"cursor": _cursor("v1:-5")},
        field="cursor",
    ),
    Case(
        "list-cursor-version",
        422,
        "GET",
        LIST,
        "auditor",
        params={"cursor": _cursor("v2:5")},
        field="cursor",
    ),
    Case(
        "list-cursor-binary",
        422,
        "GET",
        LIST,
        "auditor",
        params={"cursor": "_-_-_-_-"},
        field="cursor",
    ),
    Case(
        "list-cursor-huge",
        422,
        "GET",
        LIST,
        "auditor",
        params={"cursor": _cursor("v1:" + "9" * 40)},
        field="cursor",
    ),
    Case("list-bad-percent-encoding", 422, "GET", LIST + "?category=%FF%FE", "auditor"),
    Case(
        "list-since-5-digit-year",
        422,
        "GET",
        LIST,
        "auditor",
        params={"since": "20260-01-01T00:00:00Z"},
    ),
    Case("list-user-id", 422, "GET", LIST, "auditor", params={"user_id": C}, field="user_id"),
    Case(
        "list-order-id",
        422,
        "GET",
        LIST,
        "compliance_officer",
        params={"order_id": C},
        field="order_id",
    ),
    Case("list-unknown-param", 422, "GET", LIST, "auditor", params={"email": C}, field="email"),
    Case(
        "list-officer-other-category",
        403,
        "GET",
        LIST,
        "privacy_officer",
        params={"category": "financial_transactions"},
    ),
]

ENTRY_CASES = [
    Case("entry-text", 422, "GET", "/v1/events/" + C, "auditor", field="seq"),
    Case("entry-float", 422, "GET", "/v1/events/1.5", "auditor", field="seq"),
    Case("entry-negative", 404, "GET", "/v1/events/-1", "auditor"),
    Case("entry-beyond", 404, "GET", "/v1/events/999999", "auditor"),
    Case("entry-int64-max", 404, "GET", f"/v1/events/{2**63 - 1}", "auditor"),
    Case("entry-int64-overflow", 404, "GET", f"/v1/events/{2**63}", "auditor"),
    Case("entry-huge", 404, "GET", "/v1/events/" + "9" * 40, "auditor"),
    Case("entry-huge-negative", 404, "GET", "/v1/events/-" + "9" * 40, "auditor"),
]

LEAVES = "/v1/log/leaves"
INCL = "/v1/log/proof/inclusion"
CONS = "/v1/log/proof/consistency"
BIG = "9" * 40
LOG_CASES = [
    Case("leaves-missing", 422, "GET", LEAVES, "auditor", field="start"),
    Case("leaves-missing-end", 422, "GET", LEAVES, "auditor", params={"start": 0}, field="end"),
    Case("leaves-negative", 422, "GET", LEAVES, "auditor", params={"start": -1, "end": 1}),
    Case("leaves-end-0", 422, "GET", LEAVES, "auditor", params={"start": 0, "end": 0}),
    Case("leaves-empty-range", 422, "GET", LEAVES, "auditor", params={"start": 1, "end": 1}),
    Case("leaves-reversed", 422, "GET", LEAVES, "auditor", params={"start": 3, "end": 1}),
    Case("leaves-beyond-size", 422, "GET", LEAVES, "auditor", params={"start": 0, "end": 10**9}),
    Case("leaves-huge", 422, "GET", LEAVES, "auditor", params={"start": BIG, "end": BIG + "9"}),
    Case("leaves-text", 422, "GET", LEAVES, "auditor", params={"start": C, "end": 2}),
    Case("leaves-float", 422, "GET", LEAVES, "auditor", params={"start": "0.5", "end": 2}),
    Case("inclusion-missing", 422, "GET", INCL, "auditor"),
    Case("inclusion-negative", 422, "GET", INCL, "auditor", params={"seq": -1, "tree_size": 2}),
    Case("inclusion-size-0", 422, "GET", INCL, "auditor", params={"seq": 0, "tree_size": 0}),
    Case("inclusion-seq-at-size", 422, "GET", INCL, "auditor", params={"seq": 2, "tree_size": 2}),
    Case("inclusion-reversed", 422, "GET", INCL, "auditor", params={"seq": 5, "tree_size": 2}),
    Case(
        "inclusion-beyond-size", 422, "GET", INCL, "auditor", params={"seq": 0, "tree_size": 10**9}
    ),
    Case("inclusion-huge", 422, "GET", INCL, "auditor", params={"seq": 0, "tree_size": BIG}),
    Case("inclusion-text", 422, "GET", INCL, "auditor", params={"seq": C, "tree_size": 2}),
    Case("consistency-missing", 422, "GET", CONS, "auditor"),
    Case("consistency-first-0", 422, "GET", CONS, "auditor", params={"first": 0, "second": 2}),
    Case("consistency-negative", 422, "GET", CONS, "auditor", params={"first": -1, "second": 2}),
    Case("consistency-reversed", 422, "GET", CONS, "auditor", params={"first": 3, "second": 2}),
    Case(
        "consistency-beyond-size", 422, "GET", CONS, "auditor", params={"first": 1, "second": 10**9}
    ),
    Case("consistency-huge", 422, "GET", CONS, "auditor", params={"first": 1, "second": BIG}),
    Case("consistency-text", 422, "GET", CONS, "auditor", params={"first": "1", "second": C}),
    Case("log-writer", 403, "GET", LEAVES, "writer", params={"start": 0, "end": 1}),
    Case("log-anonymous", 401, "GET", INCL, None, params={"seq": C, "tree_size": C}),
]

ALL_CASES = EVENT_CASES + BATCH_CASES + SEARCH_CASES + LIST_CASES + ENTRY_CASES + LOG_CASES


def _send(server: InProcessServer, case: Case) -> httpx.Response:
    headers = dict(case.headers)
    if case.role is not None:
        headers.update(server.headers(case.role))
    kwargs: dict[str, Any] = {"params": case.params, "headers": headers, "timeout": 60}
    if case.content is not None:
        kwargs["content"] = case.content
        headers.setdefault("Content-Type", "application/json")
    elif case.json is not None:
        kwargs["json"] = case.json
    return server.request(case.method, case.path, **kwargs)


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in ALL_CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_malformed_request_is_a_4xx_problem(
    server: InProcessServer, probe: Ledger, case: Case
) -> None:
    size = probe.log.size()
    reads = records_read_count(probe)
    refusals = records_read_count(probe, "read_refused")
    r = _send(server, case)
    assert r.status_code < 500, f"{case.id}: {r.status_code} {r.text}"
    assert_problem(r, case.status, secrets=(CANARY,))
    if case.field is not None:
        fields = [e["field"] for e in r.json()["errors"]]
        assert case.field in fields, fields
    # Nothing is written by a refused request: no event, and no record of a read. A read
    # refused for its category or by the role check (403) is itself recorded, once (issue #14).
    refused = records_read_count(probe, "read_refused") - refusals
    recorded = case.id.endswith("other-category") or case.id in {"search-writer", "log-writer"}
    assert refused == (1 if recorded else 0), case.id
    assert probe.log.size() == size + refused
    assert records_read_count(probe) == reads


def _chunks(total: int) -> Iterator[bytes]:
    yield b'{"data": "'
    sent = 0
    while sent < total:
        yield b"x" * 65536
        sent += 65536
    yield b'"}'


def test_streamed_body_over_the_limit_is_413(server: InProcessServer) -> None:
    """Without a Content-Length the limit is enforced while reading."""
    for path, role in (("/v1/events", "writer"), ("/v1/events/search", "auditor")):
        r = server.post(
            path,
            content=_chunks(5 * MiB),
            headers={**server.headers(role), "Content-Type": "application/json"},
            timeout=60,
        )
        assert_problem(r, 413)


def test_declared_length_over_the_limit_is_refused_before_reading(
    socket_server: ThreadedServer,
) -> None:
    """A Content-Length over the limit is refused up front (httpx will not send such a lie)."""
    body = json.dumps(event()).encode()
    request = (
        f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {socket_server.tokens['writer']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {4 * MiB + 1}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", socket_server.port), timeout=10) as sock:
        sock.sendall(request)  # and never the rest: the answer must not wait for it
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.split(" ")[1] == "413", reply[:500]
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    assert headers["content-type"].startswith("application/problem+json")
    assert json.loads(payload.decode())["status"] == 413


def test_nesting_at_the_limit_is_accepted_and_read_back(server: InProcessServer) -> None:
    raw = data(deep=nested(31), listed=[[[[1]]]])
    r = server.post("/v1/events", json=raw, headers=server.headers("writer"))
    assert r.status_code == 201, r.text
    seq = r.json()["seq"]
    r = server.get(f"/v1/events/{seq}", headers=server.headers("compliance_officer"))
    assert r.status_code == 200, r.text
    assert r.json()["data"] == raw["data"]


def test_search_identifier_beyond_2_53_is_not_a_5xx(server: InProcessServer) -> None:
    """Not pinned down by DESIGN §4 (its integer rule is about ``data``): 200 or 422."""
    r = server.post(
        "/v1/events/search",
        json={"user_id": 2**60},
        headers=server.headers("auditor"),
    )
    assert r.status_code in {200, 422}, r.text
    if r.status_code == 422:
        assert_problem(r, 422)


def test_bad_batch_writes_nothing(server: InProcessServer) -> None:
    good = [event(c) for c in ("financial_transactions", "data_privacy_events", "security_events")]
    bad = ev(occurred_at=CANARY)
    with open_ledger(server.settings) as ledger:
        size = ledger.log.size()
        for position in range(len(good) + 1):
            events = [*good[:position], bad, *good[position:]]
            r = server.post(
                "/v1/events/batch",
                json={"events": events},
                headers=server.headers("writer"),
            )
            assert_problem(r, 422, secrets=(CANARY,))
            assert [e["field"] for e in r.json()["errors"]] == [f"events[{position}].occurred_at"]
            assert ledger.log.size() == size
        # A conflict inside a batch (reused event_id, other content) also writes nothing.
        first = server.post("/v1/events", json=good[0], headers=server.headers("writer"))
        assert first.status_code == 201
        size = ledger.log.size()
        changed = {**good[0], "event_type": "payment_refunded"}
        r = server.post(
            "/v1/events/batch",
            json={"events": [good[1], changed, good[2]]},
            headers=server.headers("writer"),
        )
        assert_problem(r, 409)
        assert ledger.log.size() == size
        # The good events were never written: appending them now is new, not a replay.
        r = server.post(
            "/v1/events/batch",
            json={"events": good[1:]},
            headers=server.headers("writer"),
        )
        assert r.status_code == 201, r.text
        assert ledger.log.size() == size + 2


def test_same_event_id_twice_in_one_batch(server: InProcessServer) -> None:
    """Within one batch: the same event twice is a replay; other content is a conflict."""
    raw = event()
    with open_ledger(server.settings) as ledger:
        size = ledger.log.size()
        changed = {**raw, "event_type": "payment_refunded"}
        r = server.post(
            "/v1/events/batch",
            json={"events": [raw, changed]},
            headers=server.headers("writer"),
        )
        assert r.status_code in {409, 422}, r.text
        assert_problem(r, r.status_code)
        assert ledger.log.size() == size
        r = server.post(
            "/v1/events/batch",
            json={"events": [raw, raw]},
            headers=server.headers("writer"),
        )
        assert r.status_code < 500, r.text
        if r.status_code == 201:
            first, second = r.json()["receipts"]
            assert first == second
            assert ledger.log.size() == size + 1
        else:
            assert_problem(r, r.status_code)
            assert ledger.log.size() == size


def test_replay_with_other_content_is_409_without_echo(server: InProcessServer) -> None:
    raw = event()
    r = server.post("/v1/events", json=raw, headers=server.headers("writer"))
    assert r.status_code == 201
    secret = {**raw, "data": {**raw["data"], "payment_method": CANARY}}
    r = server.post("/v1/events", json=secret, headers=server.headers("writer"))
    assert_problem(r, 409, secrets=(CANARY,))
    # Normalised forms are the same request: upper-case event_id, another offset, same instant.
    same = {
        **raw,
        "event_id": raw["event_id"].upper(),
        "occurred_at": "2026-11-28T03:55:17.123456Z",
    }
    r2 = server.post("/v1/events", json=same, headers=server.headers("writer"))
    assert r2.status_code == 200, r2.text
