"""The append path: idempotency, batch atomicity, normalisation, clocks, data keys, validation."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from audit_ledger.core.header import parse_leaf
from audit_ledger.errors import ConflictError, ValidationError
from audit_ledger.ledger.reads import Query
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from audit_ledger.storage.engine import create_engine_for_url
from audit_ledger.storage.store import WriteTx
from tests.support.factories import event

AUDITOR = ["auditor"]


def _append(ledger: Ledger, *raws: dict[str, Any], writer: str = "bot") -> list[Any]:
    return ledger.appends.append(ledger.appends.prepare_batch(list(raws)), writer)


def _header(ledger: Ledger, seq: int) -> dict[str, Any]:
    return ledger.reads.view_for(AUDITOR, seq).header


def _rows(settings: Settings, sql: str) -> list[Any]:
    engine = create_engine_for_url(settings.database_url)
    try:
        with engine.connect() as conn, conn.begin():
            return list(conn.execute(text(sql)).all())
    finally:
        engine.dispose()


def _assert_intact(ledger: Ledger, size: int) -> None:
    assert ledger.log.size() == size
    report = ledger.verification.run()
    assert report.ok, report.problem
    assert report.size == size


# --- idempotency -------------------------------------------------------------------------------


def test_same_content_replays_the_original_receipt(ledger: Ledger) -> None:
    raw = event()
    [first] = _append(ledger, raw)
    assert not first.replayed
    [again] = _append(ledger, copy.deepcopy(raw), writer="someone-else")
    assert again.replayed
    assert again.to_dict() == first.to_dict()
    _assert_intact(ledger, 1)


def test_different_content_is_a_conflict_with_its_index(ledger: Ledger) -> None:
    raw = event()
    _append(ledger, raw)
    variants = {
        "data": {**raw, "data": {**raw["data"], "amount": "150000.01"}},
        "event_type": {**raw, "event_type": "payment_refunded"},
        "occurred_at": {**raw, "occurred_at": "2026-11-28T10:55:17.123457+07:00"},
        "correlation_id": {**raw, "correlation_id": None},
        "category": {**event("security_events"), "event_id": raw["event_id"]},
    }
    for name, variant in variants.items():
        with pytest.raises(ConflictError) as caught:
            _append(ledger, event(), variant)
        assert caught.value.index == 1, name
    _assert_intact(ledger, 1)


def test_replays_inside_a_batch(ledger: Ledger) -> None:
    old = event()
    [stored] = _append(ledger, old)
    new = event("security_events")
    receipts = _append(ledger, old, new, copy.deepcopy(new), old)
    assert [r.seq for r in receipts] == [0, 1, 1, 0]
    assert [r.replayed for r in receipts] == [True, False, True, True]
    assert receipts[0].to_dict() == stored.to_dict() == receipts[3].to_dict()
    assert receipts[2].to_dict() == receipts[1].to_dict()
    _assert_intact(ledger, 2)


def test_conflict_inside_a_batch_writes_nothing(ledger: Ledger) -> None:
    _append(ledger, event())
    new = event()
    changed = {**new, "data": {**new["data"], "payment_method": "cash"}}
    with pytest.raises(ConflictError) as caught:
        _append(ledger, event(), new, event(), changed)
    assert caught.value.index == 3
    _assert_intact(ledger, 1)
    # Nothing of the failed batch is in the log: the same event appends fresh now.
    [receipt] = _append(ledger, new)
    assert (receipt.seq, receipt.replayed) == (1, False)


def test_conflict_with_the_log_inside_a_batch_writes_nothing(ledger: Ledger) -> None:
    stored = event()
    _append(ledger, stored)
    keys_before = _rows(ledger.settings, "SELECT key_id, uses FROM data_keys ORDER BY key_id")
    changed = {**stored, "data": {**stored["data"], "user_id": 1}}
    with pytest.raises(ConflictError) as caught:
        _append(ledger, event("data_privacy_events", user_id=77), event(), changed)
    assert caught.value.index == 2
    _assert_intact(ledger, 1)
    assert _rows(ledger.settings, "SELECT key_id, uses FROM data_keys ORDER BY key_id") == (
        keys_before
    )


def test_invalid_event_in_a_batch_writes_nothing(ledger: Ledger) -> None:
    _append(ledger, event())
    bad = event()
    bad["data"]["amount"] = 1.5
    with pytest.raises(ValidationError) as caught:
        _append(ledger, event(), bad, event())
    assert any(f["field"].startswith("events[1].data") for f in caught.value.fields)
    assert all(f["field"].startswith("events[1].") for f in caught.value.fields)
    _assert_intact(ledger, 1)


def test_failure_after_the_inserts_rolls_the_whole_batch_back(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    _append(ledger, event())
    tables = ("entries", "entry_refs", "payloads", "tree_nodes", "data_keys", "ledger_head")
    before = {t: _rows(ledger.settings, f"SELECT * FROM {t}") for t in tables}  # noqa: S608

    write_entries = WriteTx.write_entries

    def broken_write(self: WriteTx, *args: Any, **kwargs: Any) -> bool:
        write_entries(self, *args, **kwargs)
        raise RuntimeError("simulated failure after the rows were inserted")

    monkeypatch.setattr(WriteTx, "write_entries", broken_write)
    batch = [event(), event("data_privacy_events", user_id=99), event("security_events")]
    with pytest.raises(RuntimeError, match="simulated"):
        _append(ledger, *batch)
    monkeypatch.undo()
    after = {t: _rows(ledger.settings, f"SELECT * FROM {t}") for t in tables}  # noqa: S608
    assert after == before
    _assert_intact(ledger, 1)
    receipts = _append(ledger, *batch)
    assert [(r.seq, r.replayed) for r in receipts] == [(1, False), (2, False), (3, False)]
    _assert_intact(ledger, 4)


# --- normalisation -----------------------------------------------------------------------------


def test_event_id_is_lower_cased(ledger: Ledger) -> None:
    raw = event()
    raw["event_id"] = raw["event_id"].upper()
    [receipt] = _append(ledger, raw)
    lower = raw["event_id"].lower()
    assert receipt.event_id == lower
    assert _header(ledger, 0)["event_id"] == lower
    assert _rows(ledger.settings, "SELECT event_id FROM entries")[0].event_id == lower
    [again] = _append(ledger, {**raw, "event_id": lower})
    assert again.replayed
    assert again.seq == 0


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("2026-11-28T10:55:17.123456+07:00", "2026-11-28T03:55:17.123456Z"),
        ("2026-11-27T20:25:17.5-07:30", "2026-11-28T03:55:17.500000Z"),
        ("2026-11-28T03:55:17Z", "2026-11-28T03:55:17.000000Z"),
        ("2026-11-28t03:55:17.123456789z", "2026-11-28T03:55:17.123456Z"),
        ("2026-01-01T00:30:00.000001+01:00", "2025-12-31T23:30:00.000001Z"),
    ],
)
def test_occurred_at_is_normalised_to_utc(ledger: Ledger, given: str, canonical: str) -> None:
    raw = {**event(), "occurred_at": given}
    _append(ledger, raw)
    assert _header(ledger, 0)["occurred_at"] == canonical
    # Idempotency compares normalised values: the same instant written differently replays.
    [again] = _append(ledger, {**raw, "occurred_at": canonical})
    assert again.replayed


# --- recorded_at -------------------------------------------------------------------------------


def test_recorded_at_never_decreases_when_the_clock_steps_back(settings: Settings) -> None:
    t0 = datetime(2026, 11, 28, 3, 0, 0, 500000, tzinfo=UTC)
    times = [
        t0,
        t0 - timedelta(hours=1),
        t0 - timedelta(days=40),  # into the previous month
        t0 + timedelta(seconds=1),
        t0 - timedelta(microseconds=1),
    ]
    ticks: Iterator[datetime] = iter(times)

    def clock() -> datetime:
        return next(ticks)

    led = Ledger.open(settings, clock=clock)
    # Prepared on a ledger with the real clock: validation reads the clock too (the policy's
    # occurred_at rules), and this clock is for the commits alone.
    plain = Ledger.open(settings)
    try:
        batches = [plain.appends.prepare_batch([event(), event("security_events")]) for _ in times]
        receipts = [led.appends.append(batch, "bot")[0] for batch in batches]
        stamps = [r.recorded_at for r in receipts]
        assert stamps == [
            "2026-11-28T03:00:00.500000Z",
            "2026-11-28T03:00:00.500000Z",
            "2026-11-28T03:00:00.500000Z",
            "2026-11-28T03:00:01.500000Z",
            "2026-11-28T03:00:01.500000Z",
        ]
        headers = [parse_leaf(leaf) for _, leaf in led.log.leaves(0, led.log.size())]
        assert [h.recorded_at for h in headers] == [s for s in stamps for _ in range(2)]
        _assert_intact(led, 10)
    finally:
        plain.close()
        led.close()


# --- data keys ---------------------------------------------------------------------------------


def test_data_key_rotates_after_max_uses(ledger: Ledger) -> None:
    ledger.keyring.max_uses = 3
    for _ in range(7):
        _append(ledger, event())
    _append(ledger, event(), event())  # fits the third key's remaining two uses
    _append(ledger, event())  # the third key is full: a fourth one
    key_ids = [_header(ledger, seq)["key_id"] for seq in range(10)]
    a, b, c, d = key_ids[0], key_ids[3], key_ids[6], key_ids[9]
    assert len({a, b, c, d}) == 4
    assert key_ids == [a, a, a, b, b, b, c, c, c, d]
    uses = {r.key_id: r.uses for r in _rows(ledger.settings, "SELECT key_id, uses FROM data_keys")}
    assert uses == {a: 3, b: 3, c: 3, d: 1}
    # Every payload still opens under its own key.
    page = ledger.reads.page_for(["compliance_officer"], Query(category="financial_transactions"))
    assert len(page.events) == 10
    assert all(v.data is not None and v.data["amount"] == "150000.00" for v in page.events)
    _assert_intact(ledger, 10)


def test_subject_keys_differ_per_user(ledger: Ledger) -> None:
    _append(
        ledger,
        event("data_privacy_events", user_id=1),
        event("data_privacy_events", user_id=2),
        event("data_privacy_events", user_id="1"),  # the same subject as the integer 1
        event(user_id=1),
        event(user_id=2),
    )
    keys = [_header(ledger, seq)["key_id"] for seq in range(5)]
    assert keys[0] != keys[1]
    assert keys[2] == keys[0]
    assert keys[3] == keys[4]  # financial events share the month's key
    assert keys[3] not in (keys[0], keys[1])
    [row] = _rows(
        ledger.settings,
        f"SELECT scope_kind, scope_value FROM data_keys WHERE key_id = '{keys[0]}'",  # noqa: S608
    )
    assert row.scope_kind == "subject"
    assert row.scope_value == ledger.keys.indexer.index("subject", 1)
    # A later event of the same subject keeps using that subject's key.
    [receipt] = _append(ledger, event("data_privacy_events", user_id=2))
    assert _header(ledger, receipt.seq)["key_id"] == keys[1]
    data = [
        v.data
        for v in ledger.reads.page_for(
            ["privacy_officer"], Query(category="data_privacy_events")
        ).events
    ]
    assert [d["user_id"] for d in data if d] == [1, 2, "1", 2]


# --- validation --------------------------------------------------------------------------------

CANARY = "CANARY-7f3a"


def test_validation_names_fields_and_never_echoes_values(ledger: Ledger) -> None:
    envelope = {
        "event_id": f"{CANARY}-id",
        "category": f"{CANARY}-category",
        "event_type": f"{CANARY} type",
        "occurred_at": f"{CANARY}-time",
        "correlation_id": f"{CANARY} correlation",
        "data": {"x": f"{CANARY}-data"},
        "surplus": f"{CANARY}-surplus",
    }
    data = event()
    data["data"] = {
        "user_id": "",
        "amount": f"{CANARY}-amount",
        "payment_method": "qris",
        "order_id": True,
        "nested": {"deep": [1, {"ratio": 0.25}]},
        "big": 2**60,
    }
    privacy = event("data_privacy_events")
    del privacy["data"]["consent_status"]
    privacy["data"]["user_id"] = [f"{CANARY}-list"]
    with pytest.raises(ValidationError) as caught:
        ledger.appends.prepare_batch([envelope, data, privacy])
    fields = {(f["field"], f["problem"]) for f in caught.value.fields}
    names = {name for name, _ in fields}
    assert names >= {
        "events[0].event_id",
        "events[0].category",
        "events[0].event_type",
        "events[0].occurred_at",
        "events[0].correlation_id",
        "events[0].surplus",
        "events[1].data.user_id",
        "events[1].data.amount",
        "events[1].data.order_id",
        "events[2].data.consent_status",
        "events[2].data.user_id",
    }
    assert any(name.startswith("events[1].data") and "float" in p for name, p in fields)
    text_out = f"{caught.value} {caught.value.detail} {caught.value.fields!r}"
    for secret in (CANARY, "0.25", str(2**60), "qris"):
        assert secret not in text_out
    assert ledger.log.size() == 0


def test_system_category_is_refused_to_writers(ledger: Ledger) -> None:
    raw = {
        "event_id": str(uuid.uuid4()),
        "category": "ledger_operations",
        "event_type": "key_destroyed",
        "occurred_at": "2026-11-28T03:55:17Z",
        "data": {},
    }
    with pytest.raises(ValidationError) as caught:
        ledger.appends.prepare(raw)
    assert [f["field"] for f in caught.value.fields] == ["category"]


def test_cached_key_destroyed_by_another_process_is_replaced(ledger: Ledger) -> None:
    """This process remembers the subject's key; another one erases the subject (destroying
    that key). The next append for the subject must not seal with it: the guarded use count
    refuses it, and the append is redone with a new key."""
    _append(ledger, event("data_privacy_events", user_id=5))
    first_key = _header(ledger, 0)["key_id"]
    other = Ledger.open(ledger.settings)
    try:
        other.erasure.erase_subject(5)
    finally:
        other.close()
    _append(ledger, event("data_privacy_events", user_id=5))
    new_key = _header(ledger, 2)["key_id"]  # seq 1 is the erasure record
    assert new_key != first_key
    uses = {r.key_id: r.uses for r in _rows(ledger.settings, "SELECT key_id, uses FROM data_keys")}
    assert uses[first_key] == 1
    assert uses[new_key] == 1
    page = ledger.reads.page_for(["privacy_officer"], Query(category="data_privacy_events"))
    assert [v.payload_state for v in page.events] == ["erased", "present"]
    _assert_intact(ledger, 3)
