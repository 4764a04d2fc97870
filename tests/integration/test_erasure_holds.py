"""Data-subject erasure (crypto-shredding) and legal holds, on each backend (DESIGN §2, §3, §5).

Erasure makes one subject's erasable payloads unreadable, refuses categories kept by law, keeps
every proof and old checkpoint valid, and is recorded by blind index only: the raw identifier (a
canary string) appears nowhere in the database, not even inside the encrypted operation records.

Legal holds (subject, order, category, time range) stop retention and erasure for what they cover;
reports name the holds; releasing a hold lets the next run proceed. The ``order`` scope only
matters for a category whose entries carry an ``order`` ref and may expire or be erased, so these
tests lay a small policy file over the defaults that adds such a category.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select

from audit_ledger.core.checkpoint import verify_checkpoint
from audit_ledger.core.merkle import verify_consistency, verify_inclusion
from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.errors import NotFoundError, RefusedError, ValidationError
from audit_ledger.ledger.reads import EntryView, Query
from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings, load_settings
from audit_ledger.storage.erasure_requests import StoredErasureRequest
from audit_ledger.storage.holds import StoredHold
from tests.conftest import ORIGIN
from tests.support.cli import run_cli
from tests.support.factories import event

FIN, PRIV, SEC, OPS = (
    "financial_transactions",
    "data_privacy_events",
    "security_events",
    "ledger_operations",
)
DISPUTES = "order_disputes"
CANARY = "canary-subject-5f1e9a7c3b"
POLICY = """
version = 1

[categories.order_disputes]
required = ["user_id", "order_id", "reason"]
refs = { user = "user_id", order = "order_id" }
retention = "1y"
readers = ["compliance_officer"]
key_scope = "subject"
subject_field = "user_id"
erasable = true
"""


# --- helpers ----------------------------------------------------------------------------------


def dispute(user_id: str, order_id: str, occurred_at: str | None = None) -> dict[str, Any]:
    raw = event(FIN)
    raw.update(
        category=DISPUTES,
        event_type="dispute_opened",
        data={"user_id": user_id, "order_id": order_id, "reason": "not delivered"},
    )
    if occurred_at is not None:
        raw["occurred_at"] = occurred_at
    return raw


def at(raw: dict[str, Any], moment: datetime) -> dict[str, Any]:
    raw["occurred_at"] = format_timestamp(moment)
    return raw


def append(ledger: Ledger, *raws: dict[str, Any]) -> list[int]:
    return [r.seq for r in ledger.appends.append(ledger.appends.prepare_batch(list(raws)), "bot")]


def views(ledger: Ledger, role: str, **filters: Any) -> dict[int, EntryView]:
    out: dict[int, EntryView] = {}
    cursor = None
    while True:
        page = ledger.reads.page_for([role], Query(limit=1000, cursor=cursor, **filters))
        out.update((v.seq, v) for v in page.events)
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


def one(ledger: Ledger, role: str, seq: int) -> EntryView:
    return ledger.reads.view_for([role], seq)


def operations(ledger: Ledger) -> dict[int, EntryView]:
    return views(ledger, "security_team", category=OPS)


def assert_nowhere(ledger: Ledger, needle: str) -> int:
    """``needle`` occurs in no column of any row of any table; returns the rows scanned."""
    raw, text = needle.encode(), needle
    meta = MetaData()
    meta.reflect(ledger.store.engine)
    scanned = 0
    with ledger.store.reader() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                scanned += 1
                for column, value in row._mapping.items():
                    if isinstance(value, bytes | bytearray | memoryview):
                        assert raw not in bytes(value), f"{table.name}.{column}"
                    elif value is not None:
                        assert text not in str(value), f"{table.name}.{column}"
    for view in operations(ledger).values():
        assert view.data is not None
        assert text not in json.dumps(view.data), view.header["event_type"]
    return scanned


def outcome(report: Any, category: str) -> dict[str, Any]:
    got: dict[str, Any] = report.categories[category]
    return got


def request(ledger: Ledger, request_id: str) -> StoredErasureRequest:
    (found,) = ledger.erasure.requests(request_id=request_id)
    return found


# --- erasure ------------------------------------------------------------------------------------


def test_erasure_shreds_one_subject_and_keeps_every_proof(ledger: Ledger) -> None:
    mine = append(
        ledger,
        event(PRIV, user_id=CANARY, data_type="email"),
        event(PRIV, user_id=CANARY, action="share"),
        event(FIN, user_id=CANARY, order_id="ORD-77"),
        event(SEC, user_id=CANARY),
        event(PRIV, user_id="other-subject"),
        event(PRIV, user_id=CANARY, consent_status="withdrawn"),
    )
    priv_mine = [mine[0], mine[1], mine[5]]
    fin_mine, sec_mine, priv_other = mine[2], mine[3], mine[4]
    before = ledger.log.checkpoint()
    assert before is not None
    size_before = ledger.log.size()

    # Categories whose policy keeps the records are refused, whole, before anything is written.
    for names in ([FIN], [SEC], [PRIV, FIN], [OPS]):
        with pytest.raises(RefusedError):
            ledger.erasure.erase_subject(CANARY, categories=names)
    with pytest.raises(ValidationError):
        ledger.erasure.erase_subject(CANARY, categories=["no_such_category"])
    for bad in ("", True, 1.5):
        with pytest.raises(ValidationError):
            ledger.erasure.erase_subject(bad, actor="p-privacy")  # type: ignore[arg-type]
    assert ledger.log.size() == size_before

    report = ledger.erasure.erase_subject(CANARY, actor="p-privacy")
    assert report.op_seq == size_before
    assert not report.dry_run
    assert sorted(report.categories) == [PRIV]
    got = outcome(report, PRIV)
    assert got["payloads_purged"] == 3
    assert got["seq_ranges"] == [[0, 1], [5, 5]]  # priv_mine, as inclusive ranges
    assert len(got["keys_destroyed"]) == 1
    assert got["held_skipped"] == 0
    assert report.kept_by_policy == [FIN, SEC]

    # The subject's privacy payloads are unreadable; everything else still reads.
    privacy = views(ledger, "privacy_officer", category=PRIV)
    for seq in priv_mine:
        assert privacy[seq].payload_state == "erased"
        assert privacy[seq].state_seq == report.op_seq
        assert privacy[seq].data is None
        assert one(ledger, "auditor", seq).payload_state == "erased"
    kept = privacy[priv_other]
    assert kept.payload_state == "present"
    assert kept.data is not None
    assert kept.data["user_id"] == "other-subject"
    searched = views(ledger, "privacy_officer", category=PRIV, user_id=CANARY)
    assert sorted(searched) == priv_mine
    assert {v.payload_state for v in searched.values()} == {"erased"}
    fin = one(ledger, "compliance_officer", fin_mine)
    assert fin.data is not None
    assert fin.data["user_id"] == CANARY
    sec = one(ledger, "security_team", sec_mine)
    assert sec.data is not None
    assert sec.data["user_id"] == CANARY

    # The erasure is an entry of its own, naming the subject by blind index only.
    op = one(ledger, "security_team", report.op_seq)
    assert (op.header["category"], op.header["event_type"]) == (OPS, "erasure")
    assert op.data is not None
    assert op.data["requested_by"] == "p-privacy"
    assert op.data["categories"] == report.categories
    assert len(op.data["subject_ref"]) == 64
    assert CANARY not in json.dumps(op.data)

    # A later event of the same subject gets a fresh key and reads again.
    (later,) = append(ledger, event(PRIV, user_id=CANARY))
    assert one(ledger, "privacy_officer", later).payload_state == "present"

    # Chain, tree and the checkpoint made before the erasure all still verify.
    check = ledger.verification.run()
    assert check.ok, check.problem
    assert check.payloads_purged == 3
    after = ledger.log.checkpoint()
    assert after is not None
    assert after.tree_size == ledger.log.size() > before.tree_size
    verifier = ledger.keys.signer.verifier
    assert verify_checkpoint(before.note, verifier).root_hash == before.root_hash
    assert ledger.log.root(before.tree_size) == before.root_hash
    for seq in range(before.tree_size):
        leaf_hash = bytes.fromhex(one(ledger, "auditor", seq).leaf_hash)
        for size, root in (
            (before.tree_size, before.root_hash),
            (after.tree_size, after.root_hash),
        ):
            verify_inclusion(seq, size, leaf_hash, ledger.log.inclusion_proof(seq, size), root)
    proof = ledger.log.consistency_proof(before.tree_size, after.tree_size)
    verify_consistency(before.tree_size, after.tree_size, before.root_hash, after.root_hash, proof)
    assert ledger.verification.run().checkpoints == 2

    # The raw identifier is stored nowhere: no column, no decrypted operation record.
    assert assert_nowhere(ledger, CANARY) > 0


# --- legal holds ----------------------------------------------------------------------------


@pytest.fixture
def policy_settings(database_url: str, keys_dir: Path, tmp_path: Path) -> Settings:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    return load_settings(
        database_url=database_url, keys_dir=keys_dir, checkpoint_origin=ORIGIN, policy_file=policy
    )


@pytest.fixture
def clocked(policy_settings: Settings) -> Iterator[tuple[Ledger, list[datetime]]]:
    now = [datetime(2020, 1, 15, 10, 0, tzinfo=UTC)]
    ledger = Ledger.open(policy_settings, clock=lambda: now[0])
    try:
        yield ledger, now
    finally:
        ledger.close()


def check_recorded(ledger: Ledger, hold: StoredHold) -> None:
    """A hold's creation (and release) are ledger_operations entries that name it."""
    stored = {h.hold_id: h for h in ledger.holds.all()}[hold.hold_id]
    created = one(ledger, "security_team", stored.created_seq)
    assert (created.header["category"], created.header["event_type"]) == (
        OPS,
        "legal_hold_created",
    )
    assert created.data is not None
    assert created.data["hold_id"] == hold.hold_id
    assert created.data["scope"] == hold.scope
    assert created.data["scope_value"] == hold.scope_value
    if stored.released_seq is not None:
        released = one(ledger, "security_team", stored.released_seq)
        assert released.header["event_type"] == "legal_hold_released"
        assert released.data is not None
        assert released.data["hold_id"] == hold.hold_id


def test_holds_stop_retention_until_released(clocked: tuple[Ledger, list[datetime]]) -> None:
    ledger, now = clocked
    t0 = now[0]
    in_range = t0 - timedelta(days=200)  # occurred_at of the event the time-range hold covers
    seqs = append(
        ledger,
        at(event(PRIV, user_id=CANARY), t0),  # 0 subject hold + category hold
        at(event(PRIV, user_id="b"), t0),  # 1 category hold
        at(event(SEC, user_id=CANARY), t0),  # 2 subject hold
        at(event(SEC, user_id="c"), in_range),  # 3 time-range hold
        at(event(SEC, user_id="d"), t0),  # 4 free
        dispute("e", "ORD-HELD", format_timestamp(t0)),  # 5 order hold
        dispute("f", "ORD-FREE", format_timestamp(t0)),  # 6 free
        at(event(FIN, user_id="g"), t0),  # 7 permanent
    )
    assert seqs == list(range(8))
    now[0] = t0 + timedelta(days=1)
    h_subject = ledger.holds.create("subject", value=CANARY, reason="litigation 17/2020")
    h_order = ledger.holds.create("order", value="ORD-HELD")
    h_category = ledger.holds.create("category", value=PRIV)
    h_range = ledger.holds.create(
        "time_range",
        since=format_timestamp(in_range - timedelta(days=1)),
        until=format_timestamp(in_range + timedelta(days=1)),
    )
    holds = (h_subject, h_order, h_category, h_range)
    for hold in holds:
        check_recorded(ledger, hold)
    assert {h.hold_id for h in ledger.holds.all()} == {h.hold_id for h in holds}

    now[0] = t0 + timedelta(days=8 * 365)  # everything non-permanent has expired
    first = ledger.retention.run()
    assert outcome(first, PRIV)["payloads_purged"] == 0
    assert outcome(first, PRIV)["held_skipped"] == 2
    assert outcome(first, PRIV)["keys_destroyed"] == []
    assert outcome(first, PRIV)["holds"] == sorted([h_subject.hold_id, h_category.hold_id])
    assert outcome(first, SEC)["seq_ranges"] == [[4, 4]]
    assert outcome(first, SEC)["held_skipped"] == 2
    assert outcome(first, SEC)["held_seq_ranges"] == [[2, 3]]
    assert outcome(first, SEC)["holds"] == sorted([h_subject.hold_id, h_range.hold_id])
    # Held entries share the period keys of free ones: those keys must survive.
    assert outcome(first, SEC)["keys_destroyed"] == []
    assert outcome(first, DISPUTES)["seq_ranges"] == [[6, 6]]
    assert outcome(first, DISPUTES)["held_seq_ranges"] == [[5, 5]]
    assert outcome(first, DISPUTES)["holds"] == [h_order.hold_id]
    assert len(outcome(first, DISPUTES)["keys_destroyed"]) == 1  # f's subject key only
    for seq, role in ((0, "privacy_officer"), (1, "privacy_officer"), (2, "security_team")):
        assert one(ledger, role, seq).payload_state == "present"
    assert one(ledger, "security_team", 3).data is not None
    assert one(ledger, "compliance_officer", 5).data is not None
    assert one(ledger, "security_team", 4).payload_state == "purged"
    assert one(ledger, "compliance_officer", 6).payload_state == "purged"
    assert ledger.verification.run().ok

    # Releasing the subject and order holds frees what only they covered.
    now[0] += timedelta(hours=1)
    for hold in (h_subject, h_order):
        ledger.holds.release(hold.hold_id, actor="p-admin")
        check_recorded(ledger, hold)
    with pytest.raises(NotFoundError):
        ledger.holds.release(h_subject.hold_id)  # only once
    second = ledger.retention.run()
    assert outcome(second, PRIV)["payloads_purged"] == 0  # the category hold still covers both
    assert outcome(second, PRIV)["holds"] == [h_category.hold_id]
    assert outcome(second, SEC)["seq_ranges"] == [[2, 2]]
    assert outcome(second, SEC)["holds"] == [h_range.hold_id]
    assert outcome(second, DISPUTES)["seq_ranges"] == [[5, 5]]
    assert outcome(second, DISPUTES)["held_skipped"] == 0
    assert one(ledger, "security_team", 2).state_seq == second.op_seq

    # Releasing the rest lets the next run purge everything that expired, keys included.
    now[0] += timedelta(hours=1)
    for hold in (h_category, h_range):
        ledger.holds.release(hold.hold_id)
        check_recorded(ledger, hold)
    third = ledger.retention.run()
    assert outcome(third, PRIV)["seq_ranges"] == [[0, 1]]
    assert len(outcome(third, PRIV)["keys_destroyed"]) == 2
    assert outcome(third, SEC)["seq_ranges"] == [[3, 3]]
    assert len(outcome(third, SEC)["keys_destroyed"]) == 1  # recorded_at month, now free
    for part in third.categories.values():
        assert part["held_skipped"] == 0
    assert one(ledger, "compliance_officer", 7).data is not None  # permanent
    assert all(h.released_seq is not None for h in ledger.holds.all())
    check = ledger.verification.run()
    assert check.ok, check.problem
    assert check.payloads_purged == 7
    assert_nowhere(ledger, CANARY)


def test_holds_stop_erasure_until_released(clocked: tuple[Ledger, list[datetime]]) -> None:
    ledger, now = clocked
    t0 = now[0]
    in_range = t0 - timedelta(days=30)
    seqs = append(
        ledger,
        at(event(PRIV, user_id=CANARY), t0),  # 0 subject hold
        at(event(PRIV, user_id="e"), t0),  # 1 free, but e's dispute is held by order
        dispute("e", "ORD-HELD", format_timestamp(t0)),  # 2 order hold
        at(event(PRIV, user_id="g"), in_range),  # 3 time-range hold ...
        at(event(PRIV, user_id="g"), t0),  # 4 ... and its key-sibling
        at(event(PRIV, user_id="b"), t0),  # 5 category hold (later)
    )
    assert seqs == list(range(6))
    h_subject = ledger.holds.create("subject", value=CANARY)
    h_order = ledger.holds.create("order", value="ORD-HELD")
    h_range = ledger.holds.create(
        "time_range",
        since=format_timestamp(in_range),
        until=format_timestamp(in_range + timedelta(seconds=1)),
    )

    held = ledger.erasure.erase_subject(CANARY)
    assert outcome(held, PRIV)["payloads_purged"] == 0
    assert outcome(held, PRIV)["held_skipped"] == 1
    assert outcome(held, PRIV)["keys_destroyed"] == []
    assert outcome(held, PRIV)["holds"] == [h_subject.hold_id]
    assert one(ledger, "privacy_officer", 0).data is not None

    split = ledger.erasure.erase_subject("e")
    assert outcome(split, PRIV)["seq_ranges"] == [[1, 1]]
    assert outcome(split, DISPUTES)["held_seq_ranges"] == [[2, 2]]
    assert outcome(split, DISPUTES)["holds"] == [h_order.hold_id]
    assert one(ledger, "privacy_officer", 1).payload_state == "erased"
    assert one(ledger, "compliance_officer", 2).data is not None

    # A key goes whole or not at all: one held entry keeps its sibling readable too.
    whole = ledger.erasure.erase_subject("g")
    assert outcome(whole, PRIV)["held_seq_ranges"] == [[3, 4]]
    assert outcome(whole, PRIV)["holds"] == [h_range.hold_id]
    assert one(ledger, "privacy_officer", 4).data is not None

    # Each request waits, blocked by the hold that kept its data ...
    for report, hold in ((held, h_subject), (split, h_order), (whole, h_range)):
        assert (report.state, report.blocked_by) == ("blocked", [hold.hold_id])
        assert request(ledger, report.request_id).blocked_by == (hold.hold_id,)
    # ... and releasing that hold resumes it: a recorded erasure of its own erases what was held.
    for report, hold, category, seq in (
        (held, h_subject, PRIV, 0),
        (split, h_order, DISPUTES, 2),
        (whole, h_range, PRIV, 3),
    ):
        ledger.holds.release(hold.hold_id, actor="p-compliance")
        check_recorded(ledger, hold)
        resumed = request(ledger, report.request_id)
        assert (resumed.state, resumed.blocked_by) == ("done", ())
        assert resumed.last_op_seq is not None
        assert report.op_seq is not None
        assert resumed.last_op_seq > report.op_seq
        assert one(ledger, "auditor", seq).payload_state == "erased"
        assert one(ledger, "auditor", seq).state_seq == resumed.last_op_seq
        op = one(ledger, "security_team", resumed.last_op_seq)
        assert op.data is not None
        assert (op.data["trigger"], op.data["request_ids"]) == (
            "hold_released",
            [resumed.request_id],
        )
        assert op.data["categories"][category]["held_skipped"] == 0
    assert one(ledger, "privacy_officer", 4).payload_state == "erased"

    h_category = ledger.holds.create("category", value=PRIV)
    check_recorded(ledger, h_category)
    blocked = ledger.erasure.erase_subject("b")
    assert outcome(blocked, PRIV)["held_seq_ranges"] == [[5, 5]]
    assert outcome(blocked, PRIV)["holds"] == [h_category.hold_id]
    assert one(ledger, "privacy_officer", 5).payload_state == "present"
    ledger.holds.release(h_category.hold_id)
    assert request(ledger, blocked.request_id).state == "done"
    assert one(ledger, "privacy_officer", 5).payload_state == "erased"

    check = ledger.verification.run()
    assert check.ok, check.problem
    assert check.payloads_purged == 6
    assert_nowhere(ledger, CANARY)


def test_hold_requests_are_validated(clocked: tuple[Ledger, list[datetime]]) -> None:
    ledger, _ = clocked
    size = ledger.log.size()
    bad: list[tuple[str, dict[str, Any]]] = [
        ("forever", {}),
        ("subject", {}),
        ("subject", {"value": ""}),
        ("order", {"value": True}),
        ("category", {}),
        ("category", {"value": "no_such_category"}),
        ("time_range", {}),
        ("time_range", {"since": "yesterday"}),
        ("time_range", {"since": "2020-01-02T00:00:00Z", "until": "2020-01-01T00:00:00Z"}),
        ("time_range", {"since": "2020-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"}),
    ]
    for scope, kwargs in bad:
        with pytest.raises(ValidationError):
            ledger.holds.create(scope, **kwargs)
    with pytest.raises(NotFoundError):
        ledger.holds.release("hold_doesnotexist")
    assert ledger.log.size() == size  # nothing recorded for refused requests
    assert ledger.holds.all() == []


# --- the CLI ------------------------------------------------------------------------------------


# Identifiers are strings: "007" is not user 7, and the scope picks which option is the value.
def test_cli_holds_and_erasure_take_identifiers_verbatim(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seqs = append(
        ledger,
        event(PRIV, user_id="007"),
        event(PRIV, user_id=7),
        event(FIN, order_id="7", user_id="x"),
    )
    settings = ledger.settings
    code, out, err = run_cli(
        monkeypatch, capsys, settings, "holds", "create", "--scope", "subject", "--user-id", "007"
    )
    assert code == 0, err
    hold_id = out.strip()
    (hold,) = ledger.holds.all()
    assert hold.hold_id == hold_id
    assert hold.scope_value == ledger.keys.indexer.index("user", "007")
    blocked = ledger.erasure.erase_subject("007")
    assert outcome(blocked, PRIV)["held_seq_ranges"] == [[seqs[0], seqs[0]]]
    code, out, err = run_cli(monkeypatch, capsys, settings, "erasure", "list", "--state", "blocked")
    assert code == 0, err
    (line,) = out.splitlines()
    subject_ref = ledger.keys.indexer.index("subject", "007")  # the blind index, not the id
    assert line.split("\t")[:4] == [blocked.request_id, "blocked", hold_id, subject_ref]
    ledger.holds.release(hold_id)  # resumes the request: user "007" is erased now
    assert one(ledger, "privacy_officer", seqs[0]).payload_state == "erased"
    assert one(ledger, "privacy_officer", seqs[1]).payload_state == "present"  # user 7 untouched
    code, out, err = run_cli(monkeypatch, capsys, settings, "erasure", "list")
    assert code == 0, err
    assert [r.split("\t")[1] for r in out.splitlines()] == ["done"]

    (again,) = append(ledger, event(PRIV, user_id="007"))
    code, out, err = run_cli(
        monkeypatch, capsys, settings, "erasure", "request", "--user-id", "007"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["categories"][PRIV]["seq_ranges"] == [[again, again]]
    assert report["state"] == "done"
    assert one(ledger, "privacy_officer", again).payload_state == "erased"
    assert one(ledger, "privacy_officer", seqs[1]).payload_state == "present"  # user 7 untouched

    # Digits of other scripts are text too: ARABIC-INDIC DIGIT SEVEN is not user 7, and a
    # superscript two is no traceback.
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        settings,
        "erasure",
        "request",
        "--user-id",
        "\N{ARABIC-INDIC DIGIT SEVEN}",
    )
    assert code == 0, err
    assert json.loads(out)["categories"][PRIV]["payloads_purged"] == 0
    assert one(ledger, "privacy_officer", seqs[1]).payload_state == "present"
    code, out, err = run_cli(
        monkeypatch, capsys, settings, "erasure", "request", "--user-id", "\N{SUPERSCRIPT TWO}"
    )
    assert code == 0, err

    # The scope picks the option that holds the value: an order hold is on --order-id.
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        settings,
        "holds",
        "create",
        "--scope",
        "order",
        "--user-id",
        "someone",
        "--order-id",
        "7",
    )
    assert code == 0, err
    order_hold = {h.hold_id: h for h in ledger.holds.all()}[out.strip()]
    assert order_hold.scope_value == ledger.keys.indexer.index("order", "7")
    run = run_cli(monkeypatch, capsys, settings, "holds", "list")
    assert run[0] == 0
    assert order_hold.hold_id in run[1]
