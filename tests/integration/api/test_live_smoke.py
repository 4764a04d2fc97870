"""The live server fixture itself works on both backends."""

from __future__ import annotations

import httpx

from tests.factories import event
from tests.integration.api.conftest import LiveServer


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
