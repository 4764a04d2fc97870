"""A read refused by the API's role check (``api/deps.require``) is recorded in the chain as
one ``read_refused`` operation (principal, endpoint, category null), in process over HTTP on
both backends (issue #14). Refused writes are not, and neither is an unauthenticated request
(a 401 has no principal to attribute, and anyone could grow the log with it)."""

from __future__ import annotations

from typing import Any

import pytest

from audit_ledger.ledger.reads import Query
from tests.support.api import assert_problem, open_ledger, records_read_count
from tests.support.factories import event
from tests.support.servers import InProcessServer, module_app_server

server = module_app_server()

#: A read endpoint: method, route template, concrete path, JSON body, a role it refuses.
Read = tuple[str, str, str, Any, str]
READS: list[Read] = [
    ("GET", "/v1/events", "/v1/events?category=financial_transactions", None, "writer"),
    ("POST", "/v1/events/search", "/v1/events/search", {}, "admin"),
    ("GET", "/v1/events/{seq}", "/v1/events/0", None, "writer"),
    ("GET", "/v1/log/leaves", "/v1/log/leaves?start=0&end=1", None, "compliance_officer"),
    ("GET", "/v1/log/proof/inclusion", "/v1/log/proof/inclusion?seq=0&tree_size=1", None, "writer"),
    (
        "GET",
        "/v1/log/proof/consistency",
        "/v1/log/proof/consistency?first=1&second=1",
        None,
        "privacy_officer",
    ),
    ("GET", "/v1/log/proof/bundle", "/v1/log/proof/bundle?seq=0", None, "security_team"),
]


def _last_refusal(server: InProcessServer) -> dict[str, Any]:
    with open_ledger(server.settings) as ledger:
        page = ledger.reads.page_for(
            ["security_team"],
            Query("ledger_operations", "read_refused", limit=1, newest_first=True),
        )
    assert page.events
    data = page.events[0].data
    assert data is not None
    return data


def _counts(server: InProcessServer) -> tuple[int, int]:
    with open_ledger(server.settings) as ledger:
        return ledger.log.size(), records_read_count(ledger, "read_refused")


@pytest.fixture(scope="module", autouse=True)
def _one_event(server: InProcessServer) -> None:
    body = event("financial_transactions")
    response = server.post("/v1/events", json=body, headers=server.headers("writer"))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("case", READS, ids=[r[1] for r in READS])
def test_a_read_refused_by_role_is_recorded_once(server: InProcessServer, case: Read) -> None:
    method, route, path, body, role = case
    size, refused = _counts(server)
    response = server.request(method, path, json=body, headers=server.headers(role))
    assert_problem(response, 403)
    assert _counts(server) == (size + 1, refused + 1)
    assert _last_refusal(server) == {
        "principal": f"p-{role}",
        "endpoint": f"{method} {route}",
        "category": None,
    }


@pytest.mark.parametrize("case", READS, ids=[r[1] for r in READS])
def test_an_unauthenticated_read_records_nothing(server: InProcessServer, case: Read) -> None:
    method, _, path, body, _ = case
    before = _counts(server)
    for headers in ({}, {"Authorization": "Bearer alt_" + "Z" * 43}, server.headers("revoked")):
        response = server.request(method, path, json=body, headers=headers)
        assert_problem(response, 401)
    assert _counts(server) == before


def test_a_refused_write_records_nothing(server: InProcessServer) -> None:
    before = _counts(server)
    appended = server.post(
        "/v1/events", json=event("financial_transactions"), headers=server.headers("auditor")
    )
    assert_problem(appended, 403)
    hold = server.post(
        "/v1/legal-holds",
        json={"scope": "category", "value": "financial_transactions"},
        headers=server.headers("auditor"),
    )
    assert_problem(hold, 403)
    erasure = server.post(
        "/v1/erasure-requests", json={"user_id": "u-1"}, headers=server.headers("writer")
    )
    assert_problem(erasure, 403)
    assert _counts(server) == before


def test_an_allowed_read_is_not_a_refusal(server: InProcessServer) -> None:
    _, refused = _counts(server)
    response = server.get(
        "/v1/events?category=financial_transactions", headers=server.headers("compliance_officer")
    )
    assert response.status_code == 200, response.text
    assert _counts(server)[1] == refused
