"""The search's two plans give the same pages (both backends): a small time range is searched
through its own index, anything else in seq order (``EntryReads.scan``, issue #14's 1M-entry
search benchmark). Forcing each plan in turn, every filter, order and cursor below must page
through exactly the same entries."""

from __future__ import annotations

import dataclasses

import pytest

from audit_ledger.ledger.service import Ledger
from audit_ledger.storage import entries as entries_module
from audit_ledger.storage.entries import EntryFilter
from tests.support.factories import event

CATEGORIES = ("financial_transactions", "data_privacy_events", "security_events")


@pytest.fixture
def seeded(ledger: Ledger) -> Ledger:
    # Times mostly follow seqs, with some back-dated events (late arrivals) in between.
    batch = []
    for i in range(90):
        day = 1 + i // 6 if i % 7 else 1 + (i * 5) % 15
        body = event(CATEGORIES[i % 3], user_id=4000 + i % 4)
        body["occurred_at"] = f"2026-11-{day:02d}T{i % 24:02d}:00:00Z"
        batch.append(body)
    ledger.appends.append(ledger.appends.prepare_batch(batch), "test")
    return ledger


def pages(ledger: Ledger, flt: EntryFilter, limit: int) -> list[list[int]]:
    found: list[list[int]] = []
    after = None
    while True:
        page = [e.seq for e in ledger.store.scan(flt, after, limit)]
        if not page:
            return found
        found.append(page)
        after = page[-1]


FILTERS = [
    EntryFilter(frozenset(CATEGORIES[:1]), since="2026-11-03T00:00:00.000000Z"),
    EntryFilter(
        frozenset(CATEGORIES),
        since="2026-11-02T00:00:00.000000Z",
        until="2026-11-05T00:00:00.000000Z",
    ),
    EntryFilter(frozenset(CATEGORIES[1:]), until="2026-11-04T00:00:00.000000Z"),
    EntryFilter(
        frozenset(CATEGORIES),
        event_type="payment_completed",
        since="2026-11-01T00:00:00.000000Z",
        until="2026-11-16T00:00:00.000000Z",
    ),
    EntryFilter(frozenset(CATEGORIES), recorded_since="2000-01-01T00:00:00.000000Z"),
]


@pytest.mark.parametrize("newest_first", [False, True])
@pytest.mark.parametrize("index", range(len(FILTERS)))
def test_both_plans_page_through_the_same_entries(
    seeded: Ledger, monkeypatch: pytest.MonkeyPatch, index: int, newest_first: bool
) -> None:
    flt = dataclasses.replace(FILTERS[index], newest_first=newest_first)
    by_range = pages(seeded, flt, 4)
    monkeypatch.setattr(entries_module, "SMALL_RANGE", -1)  # never "small": seq order
    by_seq = pages(seeded, flt, 4)
    assert by_range == by_seq
    seqs = [s for page in by_seq for s in page]
    assert len(seqs) > 4  # more than one page
    assert seqs == sorted(seqs, reverse=newest_first)
