"""Tampering by a database superuser is found by ``verify`` and named precisely.

A log of 200 mixed entries with five checkpoints is built once per backend; every case runs on
a fresh copy of it (a file copy on SQLite, ``CREATE DATABASE … TEMPLATE`` on PostgreSQL) with the
guard triggers out of the way (dropped on SQLite, ``DISABLE TRIGGER ALL`` on PostgreSQL — what a
superuser can do, DESIGN §5), changes one thing, and checks that the report names the right seq,
checkpoint or data key. A few cases also run the real ``audit-ledger verify`` for its exit code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from audit_ledger.core.header import parse_leaf
from audit_ledger.core.merkle import CompactRange, leaf_hash
from audit_ledger.ledger.service import Ledger
from audit_ledger.ledger.verify import verify_ledger
from audit_ledger.ledger.verify_entries import Problem
from tests.support.factories import event
from tests.support.tamper import (
    Case,
    Template,
    populated_template,
    tampering_copy,
)
from tests.support.tamper import alter as _alter
from tests.support.tamper import delete_entries as _delete_entries
from tests.support.tamper import flip as _flip
from tests.support.tamper import leaf_hashes as _leaf_hashes
from tests.support.tamper import set_head as _set_head

CATEGORIES = ("financial_transactions", "data_privacy_events", "security_events")
#: ("batch", n) appends n events; "op" records a ledger operation; "cp" signs a checkpoint.
LAYOUT: tuple[tuple[str, int], ...] = (
    ("batch", 30),
    ("cp", 0),
    ("batch", 35),
    ("cp", 0),
    ("batch", 34),
    ("op", 0),  # seq 99
    ("cp", 0),
    ("batch", 50),
    ("cp", 0),
    ("op", 0),  # seq 150
    ("batch", 49),
    ("cp", 0),
)
SIZE = 200
CHECKPOINTS = (30, 65, 100, 150, 200)
OPS = (99, 150)
#: Seqs tampered with: first, second, middle, a power of two minus one, last. All user events.
SAMPLE = (0, 1, 64, 127, 199)


# --- the populated template and its copies -----------------------------------------------------


def _populate(ledger: Ledger) -> None:
    n = 0
    for step, count in LAYOUT:
        if step == "batch":
            raws = []
            for _ in range(count):
                raw = event(CATEGORIES[n % 3], user_id=1000 + n % 7)
                if n % 5 == 0:
                    raw["correlation_id"] = None
                raws.append(raw)
                n += 1
            ledger.appends.append(ledger.appends.prepare_batch(raws), "bot" if n % 2 else "bot-2")
        elif step == "op":
            ledger.operations.record("retention_run", {"categories": {}, "note": "nothing due"})
        else:
            assert ledger.log.checkpoint() is not None
    assert ledger.log.size() == SIZE


def _intact(ledger: Ledger) -> None:
    report = ledger.verification.run()
    assert report.ok, report.problem
    assert report.checkpoints == len(CHECKPOINTS)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Template]:
    root = tmp_path_factory.mktemp("tamper")
    with populated_template(request, root, _populate, _intact) as populated:
        yield populated


@pytest.fixture
def case(template: Template, tmp_path: Path) -> Iterator[Case]:
    with tampering_copy(template.backend, template.location, template.keys_dir, tmp_path) as c:
        yield c


# --- helpers -----------------------------------------------------------------------------------


def _problem_after_change(
    case: Case, table: str, column: str, where: str, change: Callable[[Any], Any], **params: Any
) -> Problem:
    """Change one stored value, verify, and put the value back (so one copy serves a sample)."""
    select = f"SELECT {column} FROM {table} WHERE {where}"  # noqa: S608 - test SQL
    update = f"UPDATE {table} SET {column} = :new WHERE {where}"  # noqa: S608 - test SQL
    old = case.one(select, **params)
    case.run(update, new=change(old), **params)
    try:
        return case.problem()
    finally:
        case.run(update, new=old, **params)


def _restored(case: Case) -> None:
    report = case.ledger.verification.run()
    assert report.ok, f"restoring the copy failed: {report.problem}"


# --- zero false alarms -------------------------------------------------------------------------


def test_untouched_copy_verifies(case: Case) -> None:
    report = case.ledger.verification.run()
    assert report.ok, report.problem
    assert (report.size, report.checkpoints, report.payloads_present) == (SIZE, 5, SIZE)
    result = case.cli_verify()
    assert result.returncode == 0, result.stderr
    assert f"ok: {SIZE} entries" in result.stdout


# --- entries -----------------------------------------------------------------------------------


def test_leaf_byte_flip(case: Case) -> None:
    for seq, where in zip(SAMPLE, (0.0, 0.5, 0.3, 0.8, 1.0), strict=True):
        problem = _problem_after_change(
            case,
            "entries",
            "leaf",
            "seq = :s",
            lambda leaf, where=where: _flip(leaf, min(int(len(leaf) * where), len(leaf) - 1)),
            s=seq,
        )
        assert problem.seq == seq, problem
    _restored(case)


def test_leaf_flip_fails_the_cli(case: Case) -> None:
    leaf = case.one("SELECT leaf FROM entries WHERE seq = 64")
    case.run("UPDATE entries SET leaf = :l WHERE seq = 64", l=_flip(leaf, len(leaf) // 2))
    result = case.cli_verify()
    assert result.returncode == 1, result.stderr
    assert "seq 64" in result.stderr
    assert "Traceback" not in result.stderr


def test_leaf_hash_byte_flip(case: Case) -> None:
    for seq in SAMPLE:
        problem = _problem_after_change(
            case, "entries", "leaf_hash", "seq = :s", lambda h, s=seq: _flip(h, s % 32), s=seq
        )
        assert problem.seq == seq, problem
        assert "leaf hash" in problem.reason
    _restored(case)


TEXT_COLUMNS = ("event_id", "category", "event_type", "occurred_at", "recorded_at", "writer")


def test_text_column_change(case: Case) -> None:
    for column in TEXT_COLUMNS:
        for seq in SAMPLE:
            problem = _problem_after_change(
                case,
                "entries",
                column,
                "seq = :s",
                lambda value, s=seq: _alter(value, (s + 3) % len(value)),
                s=seq,
            )
            assert problem.seq == seq, (column, problem)
            assert column in problem.reason
    _restored(case)


def test_delete_middle_entry(case: Case) -> None:
    _delete_entries(case, "seq = :s", s=100)
    problem = case.problem()
    assert problem.seq == 100, problem


def test_swap_two_leaves(case: Case) -> None:
    for a, b in ((10, 11), (5, 180)):
        rows = {
            s: (
                case.one("SELECT leaf FROM entries WHERE seq = :s", s=s),
                case.one("SELECT leaf_hash FROM entries WHERE seq = :s", s=s),
            )
            for s in (a, b)
        }
        for swapped in (True, False):
            for s, other in ((a, b), (b, a)):
                leaf, lh = rows[other if swapped else s]
                case.run(
                    "UPDATE entries SET leaf = :l, leaf_hash = :h WHERE seq = :s",
                    l=leaf,
                    h=lh,
                    s=s,
                )
            if swapped:
                assert case.problem().seq == a
    _restored(case)


@pytest.mark.parametrize(("keep", "checkpoint"), [(199, 200), (120, 150)])
def test_truncate_tail_below_a_checkpoint(case: Case, keep: int, checkpoint: int) -> None:
    """Remove the newest entries and make everything else consistent: only the checkpoint
    that covered them can tell."""
    hashes = _leaf_hashes(case, keep)
    last_recorded = case.one("SELECT recorded_at FROM entries WHERE seq = :s", s=keep - 1)
    _delete_entries(case, "seq >= :k", k=keep)
    with case.engine.connect() as conn, conn.begin():
        nodes = conn.execute(text("SELECT level, idx FROM tree_nodes")).all()
        for level, idx in nodes:
            if (idx + 1) << level > keep:
                conn.execute(
                    text("DELETE FROM tree_nodes WHERE level = :l AND idx = :i"),
                    {"l": level, "i": idx},
                )
    _set_head(case, hashes, last_recorded)
    problem = case.problem()
    assert problem.checkpoint == checkpoint, problem


def test_consistent_rewrite_is_caught_by_checkpoints(case: Case) -> None:
    """Rewrite one entry and re-chain everything after it (leaves, hashes, tree, head): the
    signed checkpoints are what expose it."""
    start, checkpoint = 120, 150
    with case.engine.connect() as conn, conn.begin():
        rows = conn.execute(text("SELECT seq, leaf FROM entries ORDER BY seq")).all()
        hashes: list[bytes] = []
        prev = ""
        for seq, stored in rows:
            leaf = bytes(stored)
            if seq >= start:
                header = parse_leaf(leaf)
                changes: dict[str, Any] = {"prev": prev}
                if seq == start:
                    changes["event_type"] = "refund_forged"
                header = dataclasses.replace(header, **changes)
                leaf = header.encode()
                conn.execute(
                    text(
                        "UPDATE entries SET leaf = :l, leaf_hash = :h, event_type = :t"
                        " WHERE seq = :s"
                    ),
                    {"l": leaf, "h": leaf_hash(leaf), "t": header.event_type, "s": seq},
                )
            hashes.append(leaf_hash(leaf))
            prev = hashes[-1].hex()
        for level, idx, node in CompactRange().extend(hashes):
            if level > 0 and (idx + 1) << level > start:
                conn.execute(
                    text("UPDATE tree_nodes SET hash = :h WHERE level = :l AND idx = :i"),
                    {"h": node, "l": level, "i": idx},
                )
    _set_head(case, hashes, case.one("SELECT recorded_at FROM entries WHERE seq = 199"))
    problem = case.problem()
    assert problem.checkpoint == checkpoint, problem


# --- refs, tree nodes, payloads ----------------------------------------------------------------


def test_ref_value_change(case: Case) -> None:
    for seq in SAMPLE:
        problem = _problem_after_change(
            case,
            "entry_refs",
            "value",
            "seq = :s AND name = 'user'",
            lambda value, s=seq: _alter(value, s % len(value)),
            s=seq,
        )
        assert problem.seq == seq, problem
    _restored(case)
    case.run("DELETE FROM entry_refs WHERE seq = 64")
    assert case.problem().seq == 64


#: (level, idx) -> seq of the leaf that completes the subtree: (idx + 1) * 2**level - 1.
NODES = ((1, 0), (2, 15), (5, 2), (7, 0), (3, 24))


def test_tree_node_byte_flip(case: Case) -> None:
    for level, idx in NODES:
        problem = _problem_after_change(
            case,
            "tree_nodes",
            "hash",
            "level = :l AND idx = :i",
            lambda h, i=idx: _flip(h, i % 32),
            l=level,
            i=idx,
        )
        assert problem.seq == (idx + 1) * 2**level - 1, (level, idx, problem)
    _restored(case)


def test_payload_byte_flip(case: Case) -> None:
    for seq in SAMPLE:
        problem = _problem_after_change(
            case, "payloads", "blob", "seq = :s", lambda b, s=seq: _flip(b, s % len(b)), s=seq
        )
        assert problem.seq == seq, problem
        assert "payload" in problem.reason
    _restored(case)


def test_payload_deleted_without_purge_record(case: Case) -> None:
    for seq in (0, 64, 199):
        blob = case.one("SELECT blob FROM payloads WHERE seq = :s", s=seq)
        case.run("DELETE FROM payloads WHERE seq = :s", s=seq)
        problem = case.problem()
        assert problem.seq == seq, problem
        assert "payload" in problem.reason
        case.run("INSERT INTO payloads (seq, blob) VALUES (:s, :b)", s=seq, b=blob)
    _restored(case)


def test_purge_record_naming_a_user_event(case: Case) -> None:
    case.run("DELETE FROM payloads WHERE seq = 64")
    case.run("INSERT INTO payload_purges (seq, op_seq, reason) VALUES (64, 65, 'retention')")
    assert case.problem().seq == 64


def test_purge_pinned_on_an_unrelated_retention_run(case: Case) -> None:
    """A purge record naming a real, later retention run that never purged this payload: the
    run's own sealed record lists what it purged, and this seq is not in it."""
    case.run("DELETE FROM payloads WHERE seq = 64")
    case.run("INSERT INTO payload_purges (seq, op_seq, reason) VALUES (64, 99, 'retention')")
    problem = case.problem()
    assert (problem.seq, problem.reason) == (64, "payload purge not recorded by entry 99")
    # Without the keys (an auditor's run) the record cannot be read: only its kind is checked.
    assert verify_ledger(case.ledger.store, case.ledger.keys.signer.verifier).ok


def test_key_destruction_pinned_on_an_unrelated_retention_run(case: Case) -> None:
    # Not the operations' own key: destroying that makes run 150's record unreadable, which
    # verify reports too, but as another problem.
    key_id = case.one(
        "SELECT key_id FROM data_keys WHERE wrapped IS NOT NULL"
        " AND category <> 'ledger_operations' ORDER BY key_id LIMIT 1"
    )
    case.run(
        "UPDATE data_keys SET wrapped = NULL, destroyed_at = '2026-11-28T00:00:00.000000Z',"
        " destroyed_by_seq = 150 WHERE key_id = :k",
        k=key_id,
    )
    problem = case.problem()
    assert (problem.key_id, problem.reason) == (key_id, "key destruction not recorded by entry 150")


# --- checkpoints -------------------------------------------------------------------------------


def _note_position(note: str, part: str) -> int:
    lines = note.split("\n")
    starts = [sum(len(x) + 1 for x in lines[:i]) for i in range(len(lines))]
    return {
        "origin": 2,
        "size": starts[1],
        "root": starts[2] + 5,
        "signature": len(note) - 10,
    }[part]


NOTE_CHANGES = ((30, "origin"), (65, "size"), (100, "root"), (200, "signature"))


def test_checkpoint_change(case: Case) -> None:
    for size, part in NOTE_CHANGES:
        problem = _problem_after_change(
            case,
            "checkpoints",
            "note",
            "tree_size = :n",
            lambda note, part=part: _alter(note, _note_position(note, part)),
            n=size,
        )
        assert problem.checkpoint == size, (part, problem)
    for size in (30, 150):
        problem = _problem_after_change(
            case, "checkpoints", "root_hash", "tree_size = :n", lambda r: _flip(r, 7), n=size
        )
        assert problem.checkpoint == size, problem
    _restored(case)


# --- head and data keys ------------------------------------------------------------------------


HEAD_CHANGES: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("size", lambda n: n - 1),
    ("size", lambda n: n + 1),
    ("last_leaf_hash", lambda h: _flip(h, 0)),
    ("frontier", lambda f: _flip(f, 40)),
    ("last_recorded_at", lambda _: "2099-01-01T00:00:00.000000Z"),
)


def test_head_change(case: Case) -> None:
    for column, change in HEAD_CHANGES:
        problem = _problem_after_change(case, "ledger_head", column, "id = 1", change)
        assert problem.seq is not None, (column, problem)
        assert "head" in problem.reason
    _restored(case)
    case.run("DELETE FROM ledger_head")
    assert "head" in case.problem().reason


def _financial_key(case: Case) -> str:
    key_id: str = case.one(
        "SELECT key_id FROM data_keys WHERE category = 'financial_transactions'"
        " ORDER BY key_id LIMIT 1"
    )
    return key_id


def test_wrapped_data_key_flip(case: Case) -> None:
    key_id = _financial_key(case)
    problem = _problem_after_change(
        case, "data_keys", "wrapped", "key_id = :k", lambda w: _flip(w, 20), k=key_id
    )
    assert problem.key_id == key_id, problem
    _restored(case)


def test_wrapped_data_key_truncated(case: Case) -> None:
    key_id = _financial_key(case)
    problem = _problem_after_change(
        case, "data_keys", "wrapped", "key_id = :k", lambda w: w[:4], k=key_id
    )
    assert problem.key_id == key_id, problem


def test_data_key_destroyed_without_record(case: Case) -> None:
    key_id = _financial_key(case)
    destroy = (
        "UPDATE data_keys SET wrapped = :w, destroyed_at = :at, destroyed_by_seq = :s"
        " WHERE key_id = :k"
    )
    wrapped = case.one("SELECT wrapped FROM data_keys WHERE key_id = :k", k=key_id)
    for by_seq in (None, 64):
        case.run(destroy, w=None, at="2026-12-01T00:00:00.000000Z", s=by_seq, k=key_id)
        assert case.problem().key_id == key_id
        case.run(destroy, w=wrapped, at=None, s=None, k=key_id)
    _restored(case)
