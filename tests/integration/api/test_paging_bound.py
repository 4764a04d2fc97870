"""Two small semantics of issue #12, on both backends, against the application in this process.

* Paging ``ledger_operations`` with ``limit=1`` as ``security_team`` or the auditor never ended:
  each page is recorded as a ``records_read`` entry in ``ledger_operations``, which became the
  next page. Now a paging sees ledger_operations as it was at its first page (the log size then
  travels in the cursor); the reads it recorded are found by the next paging. Other categories
  still show what is appended during a paging.
* An erasure request with ``"categories": []`` erased every erasable category; now it is a 422
  and nothing is erased.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.support.api import assert_problem
from tests.support.factories import event
from tests.support.servers import InProcessServer, module_app_server

server = module_app_server()
OPS = "ledger_operations"


def _page_all(server: InProcessServer, role: str, limit: int, pages_max: int) -> list[int]:
    seqs: list[int] = []
    cursor = None
    for _ in range(pages_max):
        params: dict[str, Any] = {"category": OPS, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = server.get("/v1/events", params=params, headers=server.headers(role))
        assert response.status_code == 200, response.text
        page = response.json()
        seqs += [e["seq"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seqs
    pytest.fail(f"paging ledger_operations as {role} did not end in {pages_max} pages")


def _ops_now(server: InProcessServer) -> list[int]:
    """ledger_operations seqs, read in one page (itself recorded, after the answer)."""
    response = server.get(
        "/v1/events", params={"category": OPS, "limit": 1000}, headers=server.headers("auditor")
    )
    assert response.json()["next_cursor"] is None
    return [e["seq"] for e in response.json()["events"]]


@pytest.mark.parametrize("role", ["security_team", "auditor"])
def test_paging_ledger_operations_one_by_one_ends(server: InProcessServer, role: str) -> None:
    server.post(
        "/v1/events/batch",
        json={"events": [event("security_events") for _ in range(3)]},
        headers=server.headers("writer"),
    )
    before = _ops_now(server)  # its own read is recorded after it: one more entry
    seqs = _page_all(server, role, limit=1, pages_max=len(before) + 5)
    # Exactly the operations that existed when the paging began (the read above included),
    # none of the records_read entries the paging appended itself.
    assert seqs[: len(before)] == before
    assert len(seqs) == len(before) + 1
    # The next paging finds the reads the previous one recorded.
    later = _page_all(server, role, limit=1000, pages_max=2)
    assert len(later) >= len(seqs) + len(seqs)  # one records_read per page of the paging


def test_a_paging_still_shows_events_appended_after_its_first_page(
    server: InProcessServer,
) -> None:
    """The bound is for ledger_operations only: a tail of the event categories still follows
    what is appended while it pages."""
    headers = server.headers("security_team")
    server.post(
        "/v1/events/batch",
        json={"events": [event("security_events") for _ in range(2)]},
        headers=server.headers("writer"),
    )
    first = server.get(
        "/v1/events", params={"category": "security_events", "limit": 1}, headers=headers
    )
    cursor = first.json()["next_cursor"]
    assert cursor is not None
    appended = server.post(
        "/v1/events", json=event("security_events"), headers=server.headers("writer")
    ).json()["seq"]
    seen = [e["seq"] for e in first.json()["events"]]
    while cursor is not None:
        page = server.get(
            "/v1/events",
            params={"category": "security_events", "limit": 1, "cursor": cursor},
            headers=headers,
        ).json()
        seen += [e["seq"] for e in page["events"]]
        cursor = page["next_cursor"]
    assert appended in seen


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_a_cursor_issued_before_bounds_still_pages(server: InProcessServer) -> None:
    response = server.get(
        "/v1/events",
        params={"category": "security_events", "limit": 1, "cursor": _cursor("v1:0")},
        headers=server.headers("security_team"),
    )
    assert response.status_code == 200, response.text
    assert all(e["seq"] > 0 for e in response.json()["events"])


@pytest.mark.parametrize("text", ["v2:5:5", "v2:9:3", "v2:1", "v2:1:2:3", "v2:1:-2"])
def test_a_malformed_bounded_cursor_is_refused(server: InProcessServer, text: str) -> None:
    response = server.get(
        "/v1/events", params={"cursor": _cursor(text)}, headers=server.headers("auditor")
    )
    assert_problem(response, 422)
    assert response.json()["errors"] == [{"field": "cursor", "problem": "invalid cursor"}]


def test_erasure_with_an_empty_category_list_is_refused(server: InProcessServer) -> None:
    raw = event("data_privacy_events", user_id="subject-empty-list")
    assert server.post("/v1/events", json=raw, headers=server.headers("writer")).status_code == 201
    response = server.post(
        "/v1/erasure-requests",
        json={"user_id": "subject-empty-list", "categories": []},
        headers=server.headers("privacy_officer"),
    )
    assert_problem(response, 422)
    assert response.json()["errors"][0]["field"] == "categories"
    found = server.post(
        "/v1/events/search",
        json={"category": "data_privacy_events", "user_id": "subject-empty-list"},
        headers=server.headers("privacy_officer"),
    ).json()["events"]
    assert [e["payload_state"] for e in found] == ["present"]
    assert found[0]["data"]["user_id"] == "subject-empty-list"
