"""Limits and degraded operation over a real server (DESIGN §4).

* The database goes away under a running server (PostgreSQL: connections refused and the open
  ones terminated): appends and reads answer 503 problem+json with ``Retry-After``, ``/readyz``
  answers 503 naming the failing check, liveness stays up; when the database comes back the
  server recovers by itself.
* Page sizes are bounded: ``limit`` is 1…1000 on both read endpoints and leaves come at most
  1000 to a page.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.conftest import PG_ADMIN_URL
from tests.integration.api.conftest import InProcessServer, LiveServer
from tests.support.api import assert_problem, open_ledger
from tests.support.factories import event


@contextmanager
def database_unreachable(database_url: str) -> Iterator[None]:
    """Refuse new connections to the database and end the open ones; restore afterwards."""
    name = make_url(database_url).database
    assert name
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            yield
        finally:
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name))
            )


def _wait_ready(server: LiveServer, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(server.url + "/readyz", timeout=10)
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


@pytest.mark.process
def test_database_unreachable_is_503_and_recovers(live_server: LiveServer, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite is a local file opened in-process: there is no server to lose")
    server = live_server
    writer, auditor = server.headers("writer"), server.headers("auditor")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/v1/events", json=event(), headers=writer).status_code == 201
        with database_unreachable(server.settings.database_url):
            calls: list[tuple[str, str, dict[str, str], dict[str, Any]]] = [
                ("POST", "/v1/events", writer, {"json": event()}),
                ("POST", "/v1/events/batch", writer, {"json": {"events": [event()]}}),
                ("GET", "/v1/events", auditor, {}),
                ("POST", "/v1/events/search", auditor, {"json": {"user_id": 4242}}),
                ("GET", "/v1/events/0", auditor, {}),
                ("GET", "/v1/log/checkpoint", auditor, {}),
                ("GET", "/v1/log/leaves", auditor, {"params": {"start": 0, "end": 1}}),
                ("GET", "/v1/log/proof/inclusion", auditor, {"params": {"seq": 0, "tree_size": 1}}),
            ]
            for _ in range(2):  # the first try meets dead pooled connections, the second none
                for method, path, headers, kwargs in calls:
                    r = client.request(method, path, headers=headers, **kwargs)
                    assert_problem(r, 503)
            # An invalid body is still a 401 without credentials (no database needed to say so).
            assert_problem(client.post("/v1/events", json=event()), 401)
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.headers["content-type"] == "application/json"
            assert ready.headers["retry-after"].isdigit()
            body = ready.json()
            assert body["checks"]["database"] == "unreachable", body
            assert body["checks"]["keys"] == "ok", body
            assert client.get("/healthz").status_code == 200
            assert client.get("/v1/log/verifier-key").status_code == 200
            assert client.get("/metrics").status_code == 200

        ready = _wait_ready(server)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok"
        raw = event()
        r = client.post("/v1/events", json=raw, headers=writer)
        assert r.status_code == 201, r.text
        seq = r.json()["seq"]
        r = client.get(f"/v1/events/{seq}", headers=server.headers("compliance_officer"))
        assert r.status_code == 200, r.text
        assert r.json()["data"] == raw["data"]
    # Nothing refused during the outage was written: the log holds the two acknowledged events
    # (plus principal changes and records of reads), each exactly once.
    with open_ledger(server.settings) as ledger:
        assert ledger.verification.run().ok


def test_page_size_bounds(app_server: InProcessServer) -> None:
    server = app_server
    writer, auditor = server.headers("writer"), server.headers("auditor")
    with server.session() as client:
        r = client.post(
            "/v1/events/batch", json={"events": [event() for _ in range(1000)]}, headers=writer
        )
        assert r.status_code == 201, r.text
        over = client.post(
            "/v1/events/batch", json={"events": [event() for _ in range(1001)]}, headers=writer
        )
        assert_problem(over, 413)
        with open_ledger(server.settings) as ledger:
            size = ledger.log.size()
        assert size > 1000

        for bad in (0, 1001, -1, 10**6):
            assert_problem(client.get("/v1/events", params={"limit": bad}, headers=auditor), 422)
            r = client.post("/v1/events/search", json={"limit": bad}, headers=auditor)
            assert_problem(r, 422)
            assert [e["field"] for e in r.json()["errors"]] == ["limit"]

        # Default 100; the most is 1000; pages chain through next_cursor without overlap.
        r = client.get("/v1/events", headers=auditor)
        assert r.status_code == 200
        assert len(r.json()["events"]) == 100
        seen: list[int] = []
        params: dict[str, str | int] = {"limit": 1000}
        while True:
            r = client.get("/v1/events", params=params, headers=auditor)
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["events"]) <= 1000
            seen += [e["seq"] for e in page["events"]]
            if page["next_cursor"] is None:
                break
            assert len(page["events"]) == 1000
            params["cursor"] = page["next_cursor"]
        assert seen == sorted(set(seen))
        assert len(seen) >= size
        r = client.post("/v1/events/search", json={"limit": 1000}, headers=auditor)
        assert r.status_code == 200
        assert len(r.json()["events"]) == 1000

        # Leaves: a range wider than 1000 yields the first 1000.
        r = client.get("/v1/log/leaves", params={"start": 0, "end": size}, headers=auditor)
        assert r.status_code == 200
        assert [leaf["seq"] for leaf in r.json()["leaves"]] == list(range(1000))
        r = client.get("/v1/log/leaves", params={"start": 1000, "end": size}, headers=auditor)
        assert r.status_code == 200
        assert r.json()["leaves"][0]["seq"] == 1000
