"""Tiered retention over ten simulated years, on each backend (DESIGN §2, §3, §5).

A frozen, injected clock walks one log from T-10y to T (and a little past it). Events are
appended at the moments that make them "aged" 0 d, 89 d, 4 y 364 d, 5 y 1 d, 6 y 364 d, 7 y 1 d
and 10 y at T, one per category. At every step a dry run and then a real retention run are made;
what each run must purge and which data keys it must destroy is computed here, independently of
the implementation, from ``recorded_at`` plus the category's retention in calendar years.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from audit_ledger.core.timestamps import format_timestamp, parse_timestamp
from audit_ledger.ledger.reads import EntryView, Query
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from audit_ledger.storage.schema import data_keys, payloads
from tests.support.cli import run_cli
from tests.support.factories import event

FIN, PRIV, SEC, OPS = (
    "financial_transactions",
    "data_privacy_events",
    "security_events",
    "ledger_operations",
)
#: Retention in calendar years (None = permanent), as DESIGN §2 states it.
YEARS: dict[str, int | None] = {FIN: None, PRIV: 7, SEC: 5}
READER = {FIN: "compliance_officer", PRIV: "privacy_officer", SEC: "security_team"}
T = datetime(2036, 6, 15, 12, 0, tzinfo=UTC)
#: (years, days) before T, oldest first so recorded_at never decreases.
AGES = ((10, 0), (7, 1), (6, 364), (5, 1), (4, 364), (0, 89), (0, 0))
US = timedelta(microseconds=1)


def add_years(moment: datetime, years: int) -> datetime:
    """Calendar years, keeping the time of day; Feb 29 becomes Feb 28 in a common year."""
    year = moment.year + years
    day = min(moment.day, calendar.monthrange(year, moment.month)[1])
    return moment.replace(year=year, day=day)


def aged(years: int, days: int) -> datetime:
    """The append time that makes an event aged ``years`` y ``days`` d at T."""
    return add_years(T, -years) - timedelta(days=days)


def expires(category: str, recorded_at: str) -> datetime | None:
    years = YEARS[category]
    return None if years is None else add_years(parse_timestamp(recorded_at), years)


def month_end(month: str) -> datetime:
    """Last microsecond of ``YYYY-MM``."""
    year, mon = int(month[:4]), int(month[5:7])
    last_day = calendar.monthrange(year, mon)[1]
    return datetime(year, mon, last_day, 23, 59, 59, 999_999, tzinfo=UTC)


def privacy_user(years: int, days: int) -> str:
    # Two events share one subject: its key must outlive the first purge.
    return "shared-subject" if (years, days) in ((7, 1), (6, 364)) else f"subject-{years}y{days}d"


@dataclass
class Tracked:
    seq: int
    category: str
    recorded_at: str
    key_id: str
    data: dict[str, Any]
    age: tuple[int, int]
    purged_by: int | None = None


def key_rows(ledger: Ledger) -> dict[str, Any]:
    with ledger.store.reader() as conn:
        return {r.key_id: r for r in conn.execute(select(data_keys))}


def payload_count(ledger: Ledger) -> int:
    with ledger.store.reader() as conn:
        return len(conn.execute(select(payloads.c.seq)).all())


def views(ledger: Ledger, roles: list[str], category: str) -> dict[int, EntryView]:
    out: dict[int, EntryView] = {}
    cursor = None
    while True:
        page = ledger.reads.page_for(roles, Query(category=category, limit=1000, cursor=cursor))
        out.update((v.seq, v) for v in page.events)
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


@pytest.fixture
def clocked(settings: Settings) -> Iterator[tuple[Ledger, list[datetime]]]:
    now = [T]
    ledger = Ledger.open(settings, clock=lambda: now[0])
    try:
        yield ledger, now
    finally:
        ledger.close()


def test_ten_years_of_retention(clocked: tuple[Ledger, list[datetime]]) -> None:
    ledger, now = clocked
    appends = [(aged(y, d), (y, d)) for y, d in AGES]
    june_2031 = month_end("2031-06")  # month of the 5y1d and 4y364d events
    steps = [add_years(T, -n) for n in range(10, 0, -1)]
    steps += [T - timedelta(days=1) - US, T - timedelta(days=1), T]
    # Past T: the June 2031 security key goes only once the whole month has expired.
    steps += [T + timedelta(days=3), add_years(june_2031, 5) - US, add_years(june_2031, 5)]
    timeline = sorted(
        [(t, 0, age) for t, age in appends] + [(t, 1, None) for t in steps],
        key=lambda item: (item[0], item[1]),
    )
    assert [t for t, _, _ in timeline] == sorted(t for t, _, _ in timeline)

    tracked: dict[int, Tracked] = {}
    key_destroyed_by: dict[str, int] = {}
    runs = 0
    purged_at_t: set[int] = set()
    for moment, kind, age in timeline:
        now[0] = moment
        if kind == 0:
            assert age is not None
            raws = [
                event(FIN, user_id=f"fin-{age}"),
                event(PRIV, user_id=privacy_user(*age)),
                event(SEC, user_id=f"sec-{age}"),
            ]
            for raw in raws:
                raw["occurred_at"] = format_timestamp(moment)
            receipts = ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
            for raw, receipt in zip(raws, receipts, strict=True):
                assert receipt.recorded_at == format_timestamp(moment)
                header = ledger.reads.view_for(["auditor"], receipt.seq).header
                tracked[receipt.seq] = Tracked(
                    receipt.seq,
                    raw["category"],
                    receipt.recorded_at,
                    header["key_id"],
                    raw["data"],
                    age,
                )
            continue

        # -- a retention step: expectations first, computed from recorded_at alone ---------
        runs += 1
        newly = {
            e.seq
            for e in tracked.values()
            if e.purged_by is None
            and (exp := expires(e.category, e.recorded_at)) is not None
            and moment >= exp
        }
        purged_after = {e.seq for e in tracked.values() if e.purged_by is not None} | newly
        keys_before = key_rows(ledger)
        expected_dead: set[str] = set()
        for key_id, row in keys_before.items():
            if row.category == SEC:
                # Period key: only once its whole month has expired.
                if moment >= add_years(month_end(row.scope_value), 5):
                    expected_dead.add(key_id)
            elif row.category == PRIV:
                covered = [e for e in tracked.values() if e.key_id == key_id]
                if covered and all(e.seq in purged_after for e in covered):
                    expected_dead.add(key_id)
        newly_dead = {k for k in expected_dead if keys_before[k].wrapped is not None}

        size, stored = ledger.log.size(), payload_count(ledger)
        dry = ledger.retention.run(dry_run=True)
        assert dry.dry_run
        assert dry.op_seq is None
        assert (ledger.log.size(), payload_count(ledger)) == (size, stored), "a dry run destroyed"
        assert key_rows(ledger) == keys_before

        report = ledger.retention.run()
        assert report.op_seq == size  # the run's own ledger_operations entry comes first
        assert report.categories == dry.categories, f"dry run differs at {moment}"
        for category in (PRIV, SEC):
            got = report.categories[category]
            want = sorted(s for s in newly if tracked[s].category == category)
            assert got["payloads_purged"] == len(want), (moment, category)
            ranges: Any = got["seq_ranges"]
            purged_seqs = [s for lo, hi in ranges for s in range(lo, hi + 1)]
            assert purged_seqs == want, (moment, category)
            want_keys = sorted(k for k in newly_dead if keys_before[k].category == category)
            assert got["keys_destroyed"] == want_keys, (moment, category)
            assert got["held_skipped"] == 0
        assert FIN not in report.categories  # permanent: never even planned
        for seq in newly:
            tracked[seq].purged_by = report.op_seq
        for key_id in newly_dead:
            key_destroyed_by[key_id] = report.op_seq

        # -- the store: payloads, keys ------------------------------------------------------
        keys_after = key_rows(ledger)
        for key_id, row in keys_after.items():
            if key_id in key_destroyed_by:
                assert row.wrapped is None, (moment, row.category, row.scope_value)
                assert row.destroyed_by_seq == key_destroyed_by[key_id]
            else:
                assert row.wrapped is not None, (moment, row.category, row.scope_value)
                assert row.destroyed_by_seq is None
        for key_id in key_destroyed_by:
            # A destroyed key encrypts no payload that is still meant to be readable.
            assert all(e.purged_by is not None for e in tracked.values() if e.key_id == key_id)

        # -- reads as each category's reader ------------------------------------------------
        for category, role in READER.items():
            seen = views(ledger, [role], category)
            for e in (e for e in tracked.values() if e.category == category):
                view = seen[e.seq]
                if e.purged_by is not None:
                    assert view.payload_state == "purged", (moment, e)
                    assert view.state_seq == e.purged_by
                    assert view.data is None
                    assert view.to_dict()["payload_state_seq"] == e.purged_by
                else:
                    assert view.payload_state == "present", (moment, e)
                    assert view.data == e.data
                    assert "payload_state_seq" not in view.to_dict()

        # -- the run is recorded, readable by the security team ----------------------------
        op = ledger.reads.view_for(["security_team"], report.op_seq)
        assert op.header["category"] == OPS
        assert op.header["event_type"] == "retention_run"
        assert op.data is not None
        assert op.data["categories"] == report.categories
        assert op.data["run_at"] == format_timestamp(moment)

        check = ledger.verification.run()
        assert check.ok, (moment, check.problem)
        assert check.payloads_purged == sum(e.purged_by is not None for e in tracked.values())
        if moment == T:
            purged_at_t = {e.seq for e in tracked.values() if e.purged_by is not None}

    assert runs == len(steps)
    # -- at T itself, the table: exactly these payloads were gone --------------------
    assert len(tracked) == 3 * len(AGES)
    gone = {(tracked[s].category, tracked[s].age) for s in purged_at_t}
    assert gone == {
        (SEC, (10, 0)),
        (SEC, (7, 1)),
        (SEC, (6, 364)),
        (SEC, (5, 1)),
        (PRIV, (10, 0)),
        (PRIV, (7, 1)),
    }
    # Past T: security aged 4y364d at T went three days later (the June 2031 key only at the
    # end of June 2036), privacy aged 6y364d a day later (and the shared subject key with it).
    assert {(e.category, e.age) for e in tracked.values() if e.purged_by is not None} == (
        gone | {(SEC, (4, 364)), (PRIV, (6, 364))}
    )


def test_cli_dry_run_destroys_nothing_and_matches_the_real_run(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``audit-ledger retention run --dry-run`` (real clock) against a log written years ago."""
    now = [datetime(2015, 3, 10, 9, 0, tzinfo=UTC)]
    ledger = Ledger.open(settings, clock=lambda: now[0])
    try:
        old = [event(SEC, user_id=1), event(PRIV, user_id=2), event(FIN)]
        ledger.appends.append(ledger.appends.prepare_batch(old), "bot")
        now[0] = datetime.now(UTC) - timedelta(days=1)
        fresh = [event(SEC, user_id=3), event(PRIV, user_id=4)]
        ledger.appends.append(ledger.appends.prepare_batch(fresh), "bot")
        size = ledger.log.size()

        code, out, err = run_cli(monkeypatch, capsys, settings, "retention", "run", "--dry-run")
        assert code == 0, err
        planned = json.loads(out)
        assert planned["dry_run"] is True
        assert planned["recorded_as_seq"] is None
        assert planned["categories"][SEC]["payloads_purged"] == 1
        assert planned["categories"][SEC]["seq_ranges"] == [[0, 0]]
        assert planned["categories"][PRIV]["seq_ranges"] == [[1, 1]]
        assert len(planned["categories"][SEC]["keys_destroyed"]) == 1
        assert len(planned["categories"][PRIV]["keys_destroyed"]) == 1
        assert ledger.log.size() == size
        assert payload_count(ledger) == 5
        assert all(r.wrapped is not None for r in key_rows(ledger).values())

        code, out, err = run_cli(monkeypatch, capsys, settings, "retention", "run")
        assert code == 0, err
        done = json.loads(out)
        assert done["dry_run"] is False
        assert done["recorded_as_seq"] == size
        assert done["categories"] == planned["categories"]
        assert payload_count(ledger) == 3 + 1  # the run's own record has a payload too
        assert ledger.verification.run().ok
    finally:
        ledger.close()
