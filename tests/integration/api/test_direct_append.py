"""``POST /v1/events`` through :mod:`audit_ledger.api.direct` answers exactly as through FastAPI.

Each request goes to the app as served (the direct layer answers it) and to the same app with
that layer left out of its middleware (FastAPI's router, dependencies and exception layers
answer it), on both backends, and the two answers must agree: status, media type, problem
members, the headers a client acts on, and for replays the receipt itself.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal
from fastapi.routing import APIRoute

from audit_ledger.api import direct
from audit_ledger.api.direct import DirectAppend
from audit_ledger.observability import metrics
from tests.support.factories import event
from tests.support.servers import InProcessServer, module_app_server

server = module_app_server()


class Framework:
    """The server's app without the direct layer, served in the same process and loop."""

    def __init__(self, server: InProcessServer) -> None:
        app = server.app
        kept = app.user_middleware
        app.user_middleware = [m for m in kept if m.cls is not DirectAppend]
        try:
            stack = app.build_middleware_stack()
        finally:
            app.user_middleware = kept

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            scope["app"] = app  # as Starlette.__call__ sets it
            await stack(scope, receive, send)

        transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        self.portal: BlockingPortal = server._portal

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        call = functools.partial(self.client.post, path, **kwargs)
        return self.portal.call(call)


@pytest.fixture(scope="module")
def framework(server: InProcessServer) -> Iterator[Framework]:
    other = Framework(server)
    try:
        yield other
    finally:
        other.portal.call(other.client.aclose)


def _answer(response: httpx.Response) -> dict[str, Any]:
    """What a client sees of an answer, minus what differs by design between two requests
    (the correlation id, a fresh receipt's seq and leaf hash)."""
    body = response.json()
    shown: dict[str, Any] = {
        "status": response.status_code,
        "type": response.headers["content-type"],
        "www-authenticate": response.headers.get("www-authenticate"),
        "correlation id echoed": "x-correlation-id" in response.headers,
    }
    if response.status_code >= 400:
        shown["problem"] = body
    else:
        shown["receipt members"] = sorted(body)
    return shown


def _both(
    server: InProcessServer, framework: Framework, role: str | None, **kwargs: Any
) -> tuple[httpx.Response, httpx.Response]:
    """The same request both ways; a JSON body is sent with a fresh event id each way (both
    must be able to append)."""
    headers = dict(kwargs.pop("headers", {}))
    if role is not None:
        headers = server.headers(role) | headers
    body = kwargs.pop("json", None)
    answers = []
    for side in (server, framework):
        if body is not None:
            kwargs["json"] = body | {"event_id": str(uuid.uuid4())}
        answers.append(side.post("/v1/events", headers=headers, **kwargs))
    return answers[0], answers[1]


def _event(*, data: dict[str, Any] | None = None, **members: Any) -> dict[str, Any]:
    body = event() | members
    if data is not None:
        body["data"] = body["data"] | data
    return body


JSON = {"content-type": "application/json"}
#: case → (role, request); "json" bodies get a fresh event id on each side.
CASES: dict[str, tuple[str | None, dict[str, Any]]] = {
    "appended": ("writer", {"json": _event()}),
    "invalid JSON": ("writer", {"content": b"{not json", "headers": JSON}),
    "unknown member": ("writer", {"json": _event(surprise=1)}),
    "float in data": ("writer", {"json": _event(data={"amount": 1.5})}),
    "bad occurred_at": ("writer", {"json": _event(occurred_at="yesterday")}),
    "no token": (None, {"json": _event()}),
    "unknown token": (None, {"json": _event(), "headers": {"Authorization": "Bearer alt_nope"}}),
    "not bearer": (None, {"json": _event(), "headers": {"Authorization": "Basic eA=="}}),
    "not a writer": ("auditor", {"json": _event()}),
    "revoked": ("revoked", {"json": _event()}),
    "text body": ("writer", {"content": b"x", "headers": {"content-type": "text/plain"}}),
    "too large": ("writer", {"content": b" " * (5 * 1024 * 1024), "headers": JSON}),
    "NUL in a query parameter": ("writer", {"json": _event(), "params": {"x": "\x00"}}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_direct_route_answers_as_the_framework_does(
    server: InProcessServer, framework: Framework, case: str
) -> None:
    role, spec = CASES[case]
    ours, theirs = _both(server, framework, role, **spec)
    assert ours.status_code < 500, ours.text
    assert _answer(ours) == _answer(theirs)


def test_a_replay_and_a_conflict_answer_alike(
    server: InProcessServer, framework: Framework
) -> None:
    body = event()
    first = server.post("/v1/events", json=body, headers=server.headers("writer"))
    assert first.status_code == 201, first.text
    # The same event again, once each way: the original receipt, byte for byte.
    writer = server.headers("writer")
    again = [side.post("/v1/events", json=body, headers=writer) for side in (server, framework)]
    assert [r.status_code for r in again] == [200, 200]
    assert again[0].content == again[1].content == first.content
    other = body | {"correlation_id": "another-correlation"}
    conflict = [side.post("/v1/events", json=other, headers=writer) for side in (server, framework)]
    assert [r.status_code for r in conflict] == [409, 409]
    assert _answer(conflict[0]) == _answer(conflict[1])


def test_the_direct_layer_is_what_serves_the_route(
    server: InProcessServer, framework: Framework, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without this, the comparison above could be comparing the framework with itself."""

    async def not_here(*args: Any) -> None:
        raise AssertionError("the framework's route handler ran")

    monkeypatch.setattr(APIRoute, "handle", not_here)
    ours = server.post("/v1/events", json=event(), headers=server.headers("writer"))
    assert ours.status_code == 201, ours.text
    theirs = framework.post("/v1/events", json=event(), headers=server.headers("writer"))
    assert theirs.status_code == 500


def test_a_direct_request_is_counted_and_labelled_by_its_route(server: InProcessServer) -> None:
    labels = ("POST", direct.PATH, "2xx")
    before = metrics.HTTP_REQUESTS.labels(*labels)._value.get()
    response = server.post("/v1/events", json=event(), headers=server.headers("writer"))
    assert response.status_code == 201, response.text
    assert metrics.HTTP_REQUESTS.labels(*labels)._value.get() == before + 1


def test_other_requests_to_the_path_still_reach_the_framework(server: InProcessServer) -> None:
    """A read on the same path, and the path with a trailing slash, are not the direct route's."""
    read = server.get("/v1/events", headers=server.headers("auditor"))
    assert read.status_code == 200, read.text
    slash = server.post("/v1/events/", json=event(), headers=server.headers("writer"))
    assert slash.status_code != 201
