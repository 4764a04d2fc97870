"""Reads: who sees what, keyset pagination, filters, blind-index search and range errors."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from audit_ledger.errors import NotFoundError, PermissionDeniedError, ValidationError
from audit_ledger.ledger.reads import Query
from audit_ledger.ledger.service import Ledger
from tests.support.databases import BACKENDS, fresh_settings
from tests.support.factories import event

CATEGORIES = ("financial_transactions", "data_privacy_events", "security_events")


@dataclass
class Log:
    ledger: Ledger
    raws: list[dict[str, Any]]  # by seq

    def seqs(self, category: str) -> list[int]:
        return [i for i, r in enumerate(self.raws) if r["category"] == category]


def _occurred(i: int) -> str:
    # One minute apart, written with a +07:00 offset (stored as UTC).
    minutes = 10 * 60 + i
    return f"2026-11-28T{minutes // 60:02d}:{minutes % 60:02d}:00.000000+07:00"


def _populate(ledger: Ledger) -> Log:
    """250 events: categories in turn, occurred_at one minute apart, two event types each."""
    raws = []
    for i in range(250):
        raw = event(CATEGORIES[i % 3], user_id=5000 + i)
        raw["occurred_at"] = _occurred(i)
        if i % 2:
            raw["event_type"] = raw["event_type"] + "_retry"
        raws.append(raw)
    ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
    return Log(ledger, raws)


@pytest.fixture(scope="module", params=BACKENDS)
def log(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    """The 250-event log, built once per backend for the module's tests, which only read it
    (checked at the end: nothing was appended)."""
    tmp = tmp_path_factory.mktemp(f"reads-{request.param}")
    with fresh_settings(str(request.param), request, tmp) as (settings, _):
        ledger = Ledger.open(settings)
        try:
            shared = _populate(ledger)
            yield shared
            assert ledger.log.size() == len(shared.raws), "a test wrote to the shared log"
        finally:
            ledger.close()


@pytest.fixture
def fresh_log(ledger: Ledger) -> Log:
    """The same log on a database of its own, for a test that appends."""
    return _populate(ledger)


def _all_pages(ledger: Ledger, roles: list[str], q: Query) -> list[list[int]]:
    pages: list[list[int]] = []
    cursor = None
    while True:
        page = ledger.reads.page_for(roles, dataclasses.replace(q, cursor=cursor))
        pages.append([v.seq for v in page.events])
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 50, "pagination does not end"


# --- roles -------------------------------------------------------------------------------------


def test_reader_sees_its_category_in_plaintext(log: Log) -> None:
    page = log.ledger.reads.page_for(
        ["compliance_officer"], Query(category="financial_transactions")
    )
    assert [v.seq for v in page.events] == log.seqs("financial_transactions")[:100]
    for view in page.events:
        assert view.payload_state == "present"
        assert view.data == log.raws[view.seq]["data"]
        assert view.header["category"] == "financial_transactions"
    # Without a category filter a reader gets exactly what it may see.
    unfiltered = log.ledger.reads.page_for(["compliance_officer"], Query(limit=1000))
    assert [v.seq for v in unfiltered.events] == log.seqs("financial_transactions")
    view = log.ledger.reads.view_for(["privacy_officer"], log.seqs("data_privacy_events")[3])
    assert view.data == log.raws[view.seq]["data"]


def test_auditor_gets_headers_of_every_category_and_no_plaintext(log: Log) -> None:
    page = log.ledger.reads.page_for(["auditor"], Query(limit=1000))
    assert [v.seq for v in page.events] == list(range(250))
    assert {v.header["category"] for v in page.events} == set(CATEGORIES)
    for view in page.events:
        assert view.payload_state == "withheld"
        assert view.data is None
        assert "data" not in view.to_dict()
    for category in CATEGORIES:
        filtered = log.ledger.reads.page_for(["auditor"], Query(category=category, limit=1000))
        assert [v.seq for v in filtered.events] == log.seqs(category)
        assert all(v.data is None for v in filtered.events)
    assert log.ledger.reads.view_for(["auditor"], 0).data is None


def test_auditor_who_is_also_a_reader_sees_that_category_only_in_plaintext(log: Log) -> None:
    page = log.ledger.reads.page_for(["auditor", "security_team"], Query(limit=6))
    states = {v.header["category"]: (v.payload_state, v.data is not None) for v in page.events}
    assert states == {
        "financial_transactions": ("withheld", False),
        "data_privacy_events": ("withheld", False),
        "security_events": ("present", True),
    }


REFUSED: list[tuple[list[str], str | None]] = [
    (["writer"], None),
    (["writer"], "financial_transactions"),
    (["admin"], None),
    (["admin"], "security_events"),
    ([], None),
    (["privacy_officer"], "financial_transactions"),
    (["compliance_officer"], "data_privacy_events"),
    (["security_team"], "financial_transactions"),
]


def test_roles_without_access_are_refused(log: Log) -> None:
    allowed = []
    for roles, category in REFUSED:
        try:
            log.ledger.reads.page_for(roles, Query(category=category))
        except PermissionDeniedError:
            continue
        allowed.append((roles, category))
    assert allowed == []


def test_entry_of_a_category_the_role_may_not_read_is_refused(log: Log) -> None:
    financial = log.seqs("financial_transactions")[0]
    for roles in (["privacy_officer"], ["writer"], ["admin"]):
        with pytest.raises(PermissionDeniedError):
            log.ledger.reads.view_for(roles, financial)


def test_unknown_category_is_a_validation_error(log: Log) -> None:
    with pytest.raises(ValidationError):
        log.ledger.reads.page_for(["auditor"], Query(category="no_such_category"))


# --- pagination --------------------------------------------------------------------------------


def test_keyset_pagination_over_all_events(log: Log) -> None:
    pages = _all_pages(log.ledger, ["auditor"], Query(limit=100))
    assert [len(p) for p in pages] == [100, 100, 50]
    flat = [seq for page in pages for seq in page]
    assert flat == list(range(250))  # no duplicates, no gaps, in order


def test_pagination_with_a_filter_and_an_exact_multiple(fresh_log: Log) -> None:
    log = fresh_log
    financial = log.seqs("financial_transactions")  # 84 entries
    pages = _all_pages(
        log.ledger, ["compliance_officer"], Query(category="financial_transactions", limit=42)
    )
    assert [len(p) for p in pages] == [42, 42]
    assert [s for p in pages for s in p] == financial
    # Entries appended after a page was read show up on the following pages.
    first = log.ledger.reads.page_for(["auditor"], Query(limit=249))
    log.ledger.appends.append(log.ledger.appends.prepare_batch([event(), event()]), "bot")
    rest = log.ledger.reads.page_for(["auditor"], Query(limit=100, cursor=first.next_cursor))
    assert [v.seq for v in rest.events] == [249, 250, 251]
    assert rest.next_cursor is None


BAD_CURSORS = [
    "not a cursor!",
    "%%%",
    base64.urlsafe_b64encode(b"v2:5").decode(),
    base64.urlsafe_b64encode(b"v1:-1").decode(),
    base64.urlsafe_b64encode(b"v1:abc").decode(),
    base64.urlsafe_b64encode(b"v1:1:2").decode(),
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
]


def test_bad_cursor_or_limit_is_a_validation_error(log: Log) -> None:
    for cursor in BAD_CURSORS:
        with pytest.raises(ValidationError) as caught:
            log.ledger.reads.page_for(["auditor"], Query(cursor=cursor))
        assert [f["field"] for f in caught.value.fields] == ["cursor"], cursor
    for limit in (0, -1, 1001):
        with pytest.raises(ValidationError) as caught:
            log.ledger.reads.page_for(["auditor"], Query(limit=limit))
        assert [f["field"] for f in caught.value.fields] == ["limit"], limit


# --- filters -----------------------------------------------------------------------------------


def test_filter_by_event_type(log: Log) -> None:
    page = log.ledger.reads.page_for(
        ["security_team"], Query(category="security_events", event_type="login_failed_retry")
    )
    expected = [s for s in log.seqs("security_events") if s % 2]
    assert [v.seq for v in page.events] == expected
    none = log.ledger.reads.page_for(["auditor"], Query(event_type="no_such_type"))
    assert (none.events, none.next_cursor) == ([], None)


def test_filter_by_since_and_until(log: Log) -> None:
    # since is inclusive, until exclusive; bounds given with another offset are normalised.
    page = log.ledger.reads.page_for(
        ["auditor"],
        Query(since="2026-11-28T03:10:00Z", until="2026-11-28T12:20:00+09:00", limit=1000),
    )
    assert [v.seq for v in page.events] == list(range(10, 20))
    open_end = log.ledger.reads.page_for(["auditor"], Query(since=_occurred(240), limit=1000))
    assert [v.seq for v in open_end.events] == list(range(240, 250))
    open_start = log.ledger.reads.page_for(["auditor"], Query(until=_occurred(3), limit=1000))
    assert [v.seq for v in open_start.events] == [0, 1, 2]
    with pytest.raises(ValidationError):
        log.ledger.reads.page_for(["auditor"], Query(since="yesterday"))
    with pytest.raises(ValidationError):
        log.ledger.reads.page_for(["auditor"], Query(since=_occurred(5), until=_occurred(4)))


def test_search_by_user_id_and_order_id_through_the_blind_index(ledger: Ledger) -> None:
    raws = [
        event(user_id=123, order_id="ORD-1"),
        event(user_id="123", order_id="ORD-2"),
        event(user_id=456, order_id="ORD-1"),
        event("security_events", user_id=123),
        event("data_privacy_events", user_id="123"),
        event(user_id=1234, order_id=123),
    ]
    ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
    officer = ["compliance_officer"]

    def seqs(roles: list[str], **filters: Any) -> list[int]:
        return [v.seq for v in ledger.reads.page_for(roles, Query(**filters)).events]

    assert seqs(officer, user_id=123) == [0, 1]
    assert seqs(officer, user_id="123") == [0, 1]
    assert seqs(["auditor"], user_id=123) == [0, 1, 3, 4]
    assert seqs(officer, order_id="ORD-1") == [0, 2]
    assert seqs(officer, order_id=123) == [5]  # the order ref, not the user ref
    assert seqs(officer, user_id=123, order_id="ORD-2") == [1]
    assert seqs(officer, user_id=999) == []
    # The stored refs are blind indexes, never the identifier itself.
    assert ledger.reads.view_for(["auditor"], 0).header["refs"] == {
        "user": ledger.keys.indexer.index("user", 123),
        "order": ledger.keys.indexer.index("order", "ORD-1"),
    }


# --- single entries, leaves and proofs ---------------------------------------------------------


def test_unknown_entry_is_not_found(log: Log) -> None:
    for seq in (250, 10**12, -1):
        with pytest.raises(NotFoundError):
            log.ledger.reads.view_for(["auditor"], seq)


def test_leaves_and_proof_ranges(log: Log) -> None:
    ledger = log.ledger
    assert [s for s, _ in ledger.log.leaves(0, 250)] == list(range(250))
    assert [s for s, _ in ledger.log.leaves(249, 250)] == [249]
    assert len(ledger.log.inclusion_proof(0, 250)) == 8
    assert ledger.log.consistency_proof(250, 250) == []
    assert ledger.log.consistency_proof(1, 250)
    bad_calls = {
        "leaves(5, 5)": lambda: ledger.log.leaves(5, 5),
        "leaves(6, 5)": lambda: ledger.log.leaves(6, 5),
        "leaves(-1, 5)": lambda: ledger.log.leaves(-1, 5),
        "leaves(0, 251)": lambda: ledger.log.leaves(0, 251),
        "inclusion_proof(5, 5)": lambda: ledger.log.inclusion_proof(5, 5),
        "inclusion_proof(-1, 5)": lambda: ledger.log.inclusion_proof(-1, 5),
        "inclusion_proof(0, 251)": lambda: ledger.log.inclusion_proof(0, 251),
        "inclusion_proof(0, 0)": lambda: ledger.log.inclusion_proof(0, 0),
        "consistency_proof(0, 5)": lambda: ledger.log.consistency_proof(0, 5),
        "consistency_proof(6, 5)": lambda: ledger.log.consistency_proof(6, 5),
        "consistency_proof(1, 251)": lambda: ledger.log.consistency_proof(1, 251),
    }
    accepted = []
    for name, call in bad_calls.items():
        try:
            call()
        except ValidationError as exc:
            if not exc.fields:
                accepted.append(f"{name} (no field named)")
        else:
            accepted.append(name)
    assert accepted == []


def test_leaves_come_in_pages_of_at_most_1000(ledger: Ledger) -> None:
    ledger.appends.append(
        ledger.appends.prepare_batch([event("security_events") for _ in range(1001)]), "bot"
    )
    assert [s for s, _ in ledger.log.leaves(0, 1001)] == list(range(1000))
    assert [s for s, _ in ledger.log.leaves(1000, 1001)] == [1000]
