"""A range of recording times is the range of seqs it is (migration 0006 dropped the
``(category, recorded_at)`` index): ``first_seq_recorded_from`` against a linear scan, and the
search's recorded-time filters against filtering every entry by hand, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from audit_ledger.storage.entries import EntryFilter, first_seq_recorded_from
from tests.support.factories import event

T0 = datetime(2026, 11, 1, tzinfo=UTC)
CATEGORIES = ("financial_transactions", "data_privacy_events", "security_events")


@pytest.fixture
def clocked(settings: Settings) -> Iterator[Ledger]:
    """Batches recorded at T0, T0+1h, … with several entries sharing each recorded_at."""
    now = [T0]
    ledger = Ledger.open(settings, clock=lambda: now[0])
    try:
        for hour in range(12):
            now[0] = T0 + timedelta(hours=hour)
            size = 1 + hour % 4  # batches of 1 to 4 entries share one recorded_at
            batch = [event(CATEGORIES[(hour + i) % 3]) for i in range(size)]
            ledger.appends.append(ledger.appends.prepare_batch(batch), "test")
        yield ledger
    finally:
        ledger.close()


def recorded(ledger: Ledger) -> list[str]:
    return [e.recorded_at for e in ledger.store.entries_between(0, ledger.log.size())]


def moments() -> list[str]:
    """Every recorded_at, the instants just before and after each, and both ends beyond."""
    out = [format_timestamp(T0 - timedelta(days=1)), format_timestamp(T0 + timedelta(days=1))]
    for hour in range(12):
        at = T0 + timedelta(hours=hour)
        out += [format_timestamp(at + timedelta(microseconds=d)) for d in (-1, 0, 1)]
    return out


def test_the_bound_is_where_a_scan_finds_it(clocked: Ledger) -> None:
    times = recorded(clocked)
    assert len(times) > 12
    with clocked.store.reader() as conn:
        for moment in moments():
            expected = next((seq for seq, at in enumerate(times) if at >= moment), len(times))
            assert first_seq_recorded_from(conn, moment) == expected, moment


def test_an_empty_log_bounds_at_zero(ledger: Ledger) -> None:
    with ledger.store.reader() as conn:
        assert first_seq_recorded_from(conn, format_timestamp(T0)) == 0


@pytest.mark.parametrize("newest_first", [False, True])
def test_recorded_filters_match_a_filter_by_hand(clocked: Ledger, newest_first: bool) -> None:
    everything = clocked.store.entries_between(0, clocked.log.size())
    some = [format_timestamp(T0 + timedelta(hours=h, microseconds=d)) for h, d in [(2, 0), (5, 1)]]
    for since in [None, *some]:
        for until in [None, *some, format_timestamp(T0 + timedelta(hours=9))]:
            for categories in [frozenset(CATEGORIES), frozenset(CATEGORIES[1:])]:
                flt = EntryFilter(
                    categories,
                    recorded_since=since,
                    recorded_until=until,
                    newest_first=newest_first,
                )
                expected = [
                    e.seq
                    for e in everything
                    if e.category in categories
                    and (since is None or e.recorded_at >= since)
                    and (until is None or e.recorded_at < until)
                ]
                if newest_first:
                    expected.reverse()
                found = [e.seq for e in clocked.store.scan(flt, None, 1000)]
                assert found == expected, (since, until, sorted(categories))
                assert clocked.store.count(flt, 1000) == len(expected)
