"""The server fixtures themselves work on both backends: in this process, on a socket from a
thread of this process, and as a real ``audit-ledger serve``."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.api.conftest import InProcessServer, LiveServer, ThreadedServer
from tests.support.factories import event


@pytest.mark.process
def test_append_and_read_over_http(live_server: LiveServer) -> None:
    raw = event()
    r = httpx.post(live_server.url + "/v1/events", json=raw, headers=live_server.headers("writer"))
    assert r.status_code == 201, r.text
    again = httpx.post(
        live_server.url + "/v1/events", json=raw, headers=live_server.headers("writer")
    )
    assert again.status_code == 200
    assert again.json() == r.json()
    page = httpx.get(
        live_server.url + "/v1/events",
        params={"category": raw["category"]},
        headers=live_server.headers("compliance_officer"),
    )
    assert page.status_code == 200
    assert page.json()["events"][0]["data"] == raw["data"]


def test_append_and_read_in_process(app_server: InProcessServer) -> None:
    raw = event()
    r = app_server.post("/v1/events", json=raw, headers=app_server.headers("writer"))
    assert r.status_code == 201, r.text
    again = app_server.post("/v1/events", json=raw, headers=app_server.headers("writer"))
    assert again.status_code == 200
    assert again.json() == r.json()
    page = app_server.get(
        "/v1/events",
        params={"category": raw["category"]},
        headers=app_server.headers("compliance_officer"),
    )
    assert page.status_code == 200
    assert page.json()["events"][0]["data"] == raw["data"]


def test_append_and_read_on_a_socket_and_after_a_restart(socket_server: ThreadedServer) -> None:
    raw = event()
    url = socket_server.url
    r = httpx.post(url + "/v1/events", json=raw, headers=socket_server.headers("writer"))
    assert r.status_code == 201, r.text
    socket_server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/healthz")
    socket_server.start()
    assert socket_server.url == url
    again = httpx.post(url + "/v1/events", json=raw, headers=socket_server.headers("writer"))
    assert again.status_code == 200
    assert again.json() == r.json()
