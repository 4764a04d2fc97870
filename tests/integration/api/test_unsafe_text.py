"""NUL characters and lone surrogates in any text input → 422 naming the field; submitted names
and ids never echoed (issue #12 item 6).

Before: ``GET /v1/events?event_type=%00``, NULs in search bodies and hold ids in paths, and
``"\\ud800"`` as ``user_id``/``order_id``/``event_type`` in search, legal-hold and erasure bodies
gave 500 on PostgreSQL (surrogates on SQLite too); unknown and duplicate member names came back
verbatim at any length; releasing an unknown hold echoed its id. The table below covers every text
input of the API (query, path, body; each route and field), each with a NUL and a lone surrogate,
on both backends, against the application in this process. Every value carries a canary that no
answer may contain.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.api import assert_problem
from tests.support.factories import event
from tests.support.servers import InProcessServer, module_app_server

CANARY = "c4n4ry" + uuid.uuid4().hex[:12]
NUL = CANARY + "\x00"
SURROGATE = CANARY + "\ud800"

server = module_app_server()


@dataclass(frozen=True)
class Input:
    """One text input of one route: where a bad value goes and the field the 422 must name."""

    id: str
    method: str
    path: str
    role: str
    field: str
    #: where the value goes: "query" (parameter ``field``), "path" (``{value}`` in ``path``),
    #: or a function building the JSON body around it
    where: str = "body"
    body: Any = None


def _event(**top: Any) -> dict[str, Any]:
    raw = event("financial_transactions")
    raw.update(top)
    return raw


def _event_data(**fields: Any) -> dict[str, Any]:
    raw = event("financial_transactions")
    raw["data"].update(fields)
    return raw


def _hold(**members: Any) -> dict[str, Any]:
    return {"scope": "subject", "user_id": "u-1", "reason": "litigation", **members}


READER = "compliance_officer"
INPUTS: list[Input] = [
    *(
        Input(f"list-{name}", "GET", "/v1/events", READER, name, where="query")
        for name in ("category", "event_type", "since", "until", "cursor", "limit")
    ),
    Input("entry-seq", "GET", "/v1/events/{value}", READER, "seq", where="path"),
    Input("release-hold", "POST", "/v1/legal-holds/{value}/release", "admin", "hold_id", "path"),
    *(
        Input(
            f"search-{name}",
            "POST",
            "/v1/events/search",
            READER,
            name,
            body=lambda v, n=name: {n: v},
        )
        for name in ("category", "event_type", "since", "until", "cursor", "user_id", "order_id")
    ),
    *(
        Input(
            f"append-{name}",
            "POST",
            "/v1/events",
            "writer",
            name,
            body=lambda v, n=name: _event(**{n: v}),
        )
        for name in ("event_id", "category", "event_type", "occurred_at", "correlation_id")
    ),
    *(
        Input(
            f"append-data-{name}",
            "POST",
            "/v1/events",
            "writer",
            f"data.{name}",
            body=lambda v, n=name: _event_data(**{n: v}),
        )
        for name in ("user_id", "order_id", "amount", "payment_method", "note")
    ),
    Input(
        "batch-event_type",
        "POST",
        "/v1/events/batch",
        "writer",
        "events[1].event_type",
        body=lambda v: {"events": [_event(), _event(event_type=v)]},
    ),
    Input(
        "batch-data",
        "POST",
        "/v1/events/batch",
        "writer",
        "events[0].data.user_id",
        body=lambda v: {"events": [_event_data(user_id=v)]},
    ),
    Input(
        "erasure-user_id",
        "POST",
        "/v1/erasure-requests",
        "privacy_officer",
        "user_id",
        body=lambda v: {"user_id": v},
    ),
    Input(
        "erasure-categories",
        "POST",
        "/v1/erasure-requests",
        "privacy_officer",
        "categories[0]",
        body=lambda v: {"user_id": "u-1", "categories": [v]},
    ),
    *(
        Input(
            f"hold-{name}",
            "POST",
            "/v1/legal-holds",
            "admin",
            name,
            body=lambda v, n=name: _hold(**{n: v}),
        )
        for name in ("scope", "user_id", "order_id", "category", "since", "until", "reason")
    ),
]


def _send(server: InProcessServer, case: Input, value: str) -> Any:
    headers = server.headers(case.role)
    if case.where == "query":
        return server.request(case.method, case.path, params={case.field: value}, headers=headers)
    if case.where == "path":
        path = case.path.format(value=quote(value, safe="", errors="surrogatepass"))
        return server.request(case.method, path, headers=headers)
    # json.dumps writes a lone surrogate as the escape "\ud800", as a client's JSON would.
    content = json.dumps(case.body(value)).encode()
    headers = {**headers, "content-type": "application/json"}
    return server.request(case.method, case.path, content=content, headers=headers)


def _assert_refused(response: Any, case: Input) -> None:
    assert_problem(response, 422)
    assert CANARY not in response.text, response.text
    assert "\\u0000" not in response.text
    assert "\\ud800" not in response.text.lower()
    fields = [e["field"] for e in response.json()["errors"]]
    assert case.field in fields, (case.id, fields)


@pytest.mark.parametrize("case", INPUTS, ids=[c.id for c in INPUTS])
def test_nul_is_refused_naming_the_field(server: InProcessServer, case: Input) -> None:
    _assert_refused(_send(server, case, NUL), case)


@pytest.mark.parametrize(
    "case",
    [c for c in INPUTS if c.where == "body"],
    ids=[c.id for c in INPUTS if c.where == "body"],
)
def test_lone_surrogate_is_refused_naming_the_field(server: InProcessServer, case: Input) -> None:
    _assert_refused(_send(server, case, SURROGATE), case)


def test_nul_in_a_query_parameter_name(server: InProcessServer) -> None:
    response = server.get(
        "/v1/events", params={CANARY + "\x00": "1"}, headers=server.headers(READER)
    )
    assert_problem(response, 422)
    assert CANARY not in response.text


def test_surrogate_in_a_member_name_is_named_by_position(server: InProcessServer) -> None:
    body = '{"user_id": "u-1", "' + CANARY + '\\udc80": 1}'
    response = server.post(
        "/v1/erasure-requests",
        content=body.encode(),
        headers={**server.headers("privacy_officer"), "content-type": "application/json"},
    )
    assert_problem(response, 422)
    assert CANARY not in response.text
    assert [e["field"] for e in response.json()["errors"]] == ["#2"]


def test_nothing_was_written_by_the_refused_inputs(server: InProcessServer) -> None:
    """The refusals wrote no event and no hold (reads may record themselves)."""
    holds = server.get("/v1/legal-holds", headers=server.headers("admin")).json()["holds"]
    assert holds == []
    page = server.post(
        "/v1/events/search",
        json={"category": "financial_transactions"},
        headers=server.headers(READER),
    ).json()
    assert page["events"] == []


# --- names and ids never echoed ------------------------------------------------------------------

LONG = CANARY + "x" * 10_000


@pytest.mark.parametrize(
    ("path", "role", "body", "field"),
    [
        ("/v1/events/search", READER, {LONG: 1}, "#1"),
        ("/v1/events/search", READER, {"category": "security_events", "John Smith": 1}, "#2"),
        ("/v1/erasure-requests", "privacy_officer", {"user_id": "u", LONG: 1}, "#2"),
        ("/v1/legal-holds", "admin", {**_hold(), LONG: 1}, "#4"),
        ("/v1/events", "writer", {**event("security_events"), LONG: 1}, "#7"),
        (
            "/v1/events/batch",
            "writer",
            {"events": [{**event("security_events"), LONG: 1}]},
            "events[0].#7",
        ),
        ("/v1/events/batch", "writer", {"events": [], "ev ents": 1}, "#2"),
    ],
    ids=["search-long", "search-space", "erasure", "hold", "event", "batch-event", "batch"],
)
def test_unknown_member_is_named_by_position(
    server: InProcessServer, path: str, role: str, body: Any, field: str
) -> None:
    response = server.post(path, json=body, headers=server.headers(role))
    assert_problem(response, 422)
    assert CANARY not in response.text
    assert "John" not in response.text
    assert field in [e["field"] for e in response.json()["errors"]], response.text
    assert len(response.content) < 2000


def test_short_identifier_member_names_are_shown(server: InProcessServer) -> None:
    """A short identifier is a field name, not a value: shown, so clients can fix typos."""
    response = server.post(
        "/v1/events/search", json={"categroy": "x"}, headers=server.headers(READER)
    )
    assert_problem(response, 422)
    assert [e["field"] for e in response.json()["errors"]] == ["categroy"]


def test_duplicate_member_name_is_not_echoed(server: InProcessServer) -> None:
    body = '{"' + LONG + '": 1, "' + LONG + '": 2}'
    response = server.post(
        "/v1/events/search",
        content=body.encode(),
        headers={**server.headers(READER), "content-type": "application/json"},
    )
    assert_problem(response, 422)
    assert CANARY not in response.text
    assert "duplicate object member #2" in response.text


def test_unknown_query_parameter_is_not_echoed(server: InProcessServer) -> None:
    response = server.get("/v1/events", params={LONG: "1"}, headers=server.headers(READER))
    assert_problem(response, 422)
    assert CANARY not in response.text
    assert [e["field"] for e in response.json()["errors"]] == ["#1"]


def test_releasing_an_unknown_hold_does_not_echo_its_id(server: InProcessServer) -> None:
    hold_id = "hold_" + CANARY
    response = server.post(f"/v1/legal-holds/{hold_id}/release", headers=server.headers("admin"))
    assert_problem(response, 404)
    assert CANARY not in response.text
