"""Reads recorded exactly (issue #14 item 3), on both backends: a ``records_read`` operation
names exactly the seqs a read returned (run-length ranges), and a refused read is recorded in
the chain as ``read_refused`` (principal, endpoint, category; never the identifiers searched
for), through the ledger use case, the HTTP API and the console."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from audit_ledger.core.seq_ranges import from_ranges
from audit_ledger.errors import PermissionDeniedError
from audit_ledger.ledger.identity import Principal
from audit_ledger.ledger.reads import Query, seqs_text
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from tests.support.api import open_ledger
from tests.support.console import signed_in
from tests.support.factories import event
from tests.support.servers import InProcessServer, in_process_server

OFFICER = Principal("officer-1", frozenset({"compliance_officer"}))


def _operations(ledger: Ledger, event_type: str) -> list[dict[str, Any]]:
    """The plaintext of every ``event_type`` operation, oldest first (read as the security
    team through ``page_for``, which records nothing)."""
    page = ledger.reads.page_for(
        ["security_team"], Query("ledger_operations", event_type, limit=1000)
    )
    return [v.data for v in page.events if v.data is not None]


_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def _scalars(value: Any) -> list[Any]:
    """Every string and number inside a JSON value."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in _scalars(v)]
    if isinstance(value, list):
        return [s for v in value for s in _scalars(v)]
    return [value]


@pytest.fixture
def seeded(ledger: Ledger) -> dict[str, list[int]]:
    """Twelve events over two categories, interleaved, so a category's seqs are scattered."""
    raws = [
        event("financial_transactions" if i % 3 else "security_events", user_id=100 + i % 2)
        for i in range(12)
    ]
    receipts = ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
    out: dict[str, list[int]] = {}
    for raw, receipt in zip(raws, receipts, strict=True):
        out.setdefault(raw["category"], []).append(receipt.seq)
    return out


def test_a_read_names_exactly_the_seqs_it_returned(
    ledger: Ledger, seeded: dict[str, list[int]]
) -> None:
    q = Query("financial_transactions", user_id=101, limit=1000)
    page = ledger.reads.query(OFFICER, q, "test")
    returned = [v.seq for v in page.events]
    # user 101 is every odd i of the financial ones: not one run, so first..last would lie.
    assert len(returned) >= 3
    assert returned != list(range(returned[0], returned[-1] + 1))
    (recorded,) = _operations(ledger, "records_read")
    assert list(from_ranges(recorded["seqs"])) == returned
    assert recorded["count"] == len(returned)
    assert recorded["principal"] == "officer-1"
    # The identifier is recorded as its blind index only. (Not a substring test: a random
    # index key makes "101" appear inside some blind index's hex now and then.)
    values = _scalars(recorded)
    assert 101 not in values
    assert [v for v in values if isinstance(v, str) and "101" in v and not _HEX64.match(v)] == []
    assert ledger.keys.indexer.index("user", 101) in values
    # Newest first returns the same seqs descending: the record is the same sorted ranges.
    ledger.reads.query(OFFICER, Query("financial_transactions", newest_first=True), "test")
    newest = _operations(ledger, "records_read")[-1]
    assert list(from_ranges(newest["seqs"])) == seeded["financial_transactions"]


def test_consecutive_seqs_are_one_range(ledger: Ledger, seeded: dict[str, list[int]]) -> None:
    auditor = Principal("auditor-1", frozenset({"auditor"}))
    ledger.reads.query(auditor, Query(limit=1000), "test")  # headers of every category
    (recorded,) = _operations(ledger, "records_read")
    assert recorded["seqs"] == [[0, 11]]
    ledger.reads.entry(OFFICER, seeded["financial_transactions"][0], "one")
    one = _operations(ledger, "records_read")[-1]
    first = seeded["financial_transactions"][0]
    assert one["seqs"] == [[first, first]]


def test_a_refused_read_is_recorded_without_the_identifiers(
    ledger: Ledger, seeded: dict[str, list[int]]
) -> None:
    before = len(_operations(ledger, "records_read"))
    with pytest.raises(PermissionDeniedError):
        ledger.reads.query(OFFICER, Query("security_events", user_id="u-secret-77"), "search")
    with pytest.raises(PermissionDeniedError):
        ledger.reads.entry(OFFICER, seeded["security_events"][0], "entry")
    refused = _operations(ledger, "read_refused")
    assert refused == [
        {"principal": "officer-1", "endpoint": "search", "category": "security_events"},
        {
            "principal": "officer-1",
            "endpoint": "entry",
            "category": "security_events",
            "seq": seeded["security_events"][0],
        },
    ]
    assert len(_operations(ledger, "records_read")) == before  # nothing was read
    # An admin (no category readable) asking without a category: recorded, category null.
    admin = Principal("admin-1", frozenset({"admin"}))
    with pytest.raises(PermissionDeniedError):
        ledger.reads.query(admin, Query(), "search")
    assert _operations(ledger, "read_refused")[-1]["category"] is None


@pytest.fixture
def server(settings: Settings) -> Iterator[InProcessServer]:
    with in_process_server(settings) as app:
        yield app


def test_api_and_console_refusals_are_in_the_chain(server: InProcessServer) -> None:
    body = event("security_events", user_id=9)
    created = server.post("/v1/events", json=body, headers=server.headers("writer"))
    assert created.status_code == 201
    seq = created.json()["seq"]
    officer = server.headers("compliance_officer")
    search = {"category": "security_events", "user_id": "u-never-recorded"}
    assert server.post("/v1/events/search", json=search, headers=officer).status_code == 403
    assert server.get(f"/v1/events/{seq}", headers=officer).status_code == 403
    with signed_in(server, "compliance_officer") as browser:
        assert browser.search(category="security_events").status_code == 403
        assert browser.get(f"/console/records/{seq}").status_code == 403
    with open_ledger(server.settings) as ledger:
        refused = _operations(ledger, "read_refused")
    assert [(r["endpoint"], r["category"]) for r in refused] == [
        ("POST /v1/events/search", "security_events"),
        ("GET /v1/events/{seq}", "security_events"),
        ("POST /console/search", "security_events"),
        ("GET /console/records/{seq}", "security_events"),
    ]
    assert all(r["principal"] == "p-compliance_officer" for r in refused)
    assert "u-never-recorded" not in str(refused)
    # The access trail's refused view shows them to the security team.
    with signed_in(server, "security_team") as security:
        trail = security.get("/console/access?kind=refused")
        assert trail.status_code == 200
        assert trail.text.count("p-compliance_officer") == 4
        assert f"(seq {seq})" in trail.text
        assert security.get("/console/access?kind=other").status_code == 422


def test_the_trail_shows_ranges_and_marks_records_written_before_exact_seqs() -> None:
    assert seqs_text([[3, 7], [9, 9]]) == "3-7, 9"
    assert seqs_text([3, 9]) == "3…9 (first and last only)"  # a records_read of before #14
    assert seqs_text([]) == ""
