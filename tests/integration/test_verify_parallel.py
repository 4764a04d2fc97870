"""Verification in ranges and in worker processes finds exactly what one pass finds.

``verify_ledger`` checks entries per seq range (``check_range``) — in this process, or in worker
processes — and replays the ranges in order in this one. Whatever the ranges and wherever they
are checked, the report must be the same: the same ``problem`` (seq, checkpoint or key, and
reason) for every tampering, and the same size, root and counts for an intact log.

A log of 300 mixed entries (user events of three categories, ledger operations, an erasure that
purged three payloads and destroyed a data key, five checkpoints) is built once per backend;
each test tampers with a fresh copy of it the way a database superuser can (see test_tamper)
and compares three modes: one range of 5000 (one pass), ranges of 7 in this process, ranges
of 7 in two worker processes. Ranges of 7 put range boundaries at seqs 7, 14, 21, …
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from audit_ledger.core.header import parse_leaf
from audit_ledger.core.merkle import leaf_hash
from audit_ledger.errors import StorageError
from audit_ledger.ledger.service import Ledger
from audit_ledger.ledger.verify import verify_ledger
from audit_ledger.ledger.verify_entries import Problem, VerifyReport
from audit_ledger.settings import Settings, load_settings
from tests.conftest import ORIGIN
from tests.support.cli import cli, env_for
from tests.support.factories import event
from tests.support.processes import (
    ORPHAN_TIMEOUT,
    alive_after,
    another_thread,
    child_pids,
    kill_children,
    pool_owner,
)
from tests.support.tamper import Case, populated_template, tampering_copy
from tests.support.tamper import alter as _alter
from tests.support.tamper import delete_entries as _delete_entries
from tests.support.tamper import flip as _flip
from tests.support.tamper import leaf_hashes as _leaf_hashes
from tests.support.tamper import set_head as _set_head

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]  # verify in worker processes

CATEGORIES = ("financial_transactions", "data_privacy_events", "security_events")
#: The data subject erased in the template: three privacy events, all in the first 80 entries.
ERASED_USER = 999
ERASED_AT = (10, 40, 77)
#: ("batch", n) appends n events; "op" records an operation; "erase" erases ERASED_USER;
#: "cp" signs a checkpoint.
LAYOUT: tuple[tuple[str, int], ...] = (
    ("batch", 30),
    ("cp", 0),
    ("batch", 40),
    ("cp", 0),
    ("batch", 33),
    ("op", 0),  # seq 103
    ("cp", 0),
    ("batch", 60),
    ("erase", 0),  # seq 164
    ("cp", 0),
    ("batch", 70),
    ("op", 0),  # seq 235
    ("batch", 64),
    ("cp", 0),
)
SIZE = 300
CHECKPOINTS = (30, 70, 104, 165, 300)
#: (chunk, jobs): one pass; ranges of 7 here; ranges of 7 in two worker processes.
MODES: tuple[tuple[int, int], ...] = ((5000, 1), (7, 1), (7, 2))


# --- the populated template and its copies -----------------------------------------------------


@dataclass(frozen=True)
class Template:
    backend: str
    location: str  # SQLite file path or PostgreSQL database name
    keys_dir: Path


def _settings(url: str, keys_dir: Path) -> Settings:
    return load_settings(database_url=url, keys_dir=keys_dir, checkpoint_origin=ORIGIN)


def _populate(ledger: Ledger) -> None:
    n = 0
    for step, count in LAYOUT:
        if step == "batch":
            raws = []
            for _ in range(count):
                category = CATEGORIES[n % 3]
                user = ERASED_USER if n in ERASED_AT else 1000 + n % 7
                if n in ERASED_AT:
                    category = "data_privacy_events"
                raw = event(category, user_id=user)
                if n % 5 == 0:
                    raw["correlation_id"] = None
                raws.append(raw)
                n += 1
            ledger.appends.append(ledger.appends.prepare_batch(raws), "bot" if n % 2 else "bot-2")
        elif step == "op":
            ledger.operations.record("retention_run", {"note": "nothing due"})
        elif step == "erase":
            ledger.erasure.erase_subject(ERASED_USER)
        else:
            assert ledger.log.checkpoint() is not None
    assert ledger.log.size() == SIZE


def _intact(ledger: Ledger) -> None:
    report = ledger.verification.run(jobs=1)
    assert report.ok, report.problem
    assert (report.checkpoints, report.payloads_purged) == (len(CHECKPOINTS), 3)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Template]:
    root = tmp_path_factory.mktemp("verify-parallel")
    with populated_template(request, root, _populate, _intact) as populated:
        yield Template(populated.backend, populated.location, populated.keys_dir)


@pytest.fixture
def case(template: Template, tmp_path: Path) -> Iterator[Case]:
    """A fresh copy of the populated log with the guard triggers out of the way."""
    with tampering_copy(template.backend, template.location, template.keys_dir, tmp_path) as c:
        yield c


# --- helpers -----------------------------------------------------------------------------------


def _verify(case: Case, chunk: int, jobs: int, *, started: bool = False, **kw: Any) -> VerifyReport:
    """``verify_ledger`` over the copy; with ``jobs`` > 1 the workers are forked from this
    (single-threaded) process, or, ``started``, started as interpreters of their own because
    another thread runs here, as in the service."""
    ledger = case.ledger
    with another_thread() if started else contextlib.nullcontext():
        return verify_ledger(
            ledger.store,
            ledger.keys.signer.verifier,
            keys=ledger.keys.provider,
            chunk=chunk,
            jobs=jobs,
            database_url=case.url if jobs > 1 else None,
            **kw,
        )


def _reports(case: Case, modes: tuple[tuple[int, int], ...] = MODES) -> dict[str, VerifyReport]:
    reports = {f"chunk={chunk} jobs={jobs}": _verify(case, chunk, jobs) for chunk, jobs in modes}
    if (7, 2) in modes:  # workers started, not forked (another thread runs): the same report
        reports["chunk=7 jobs=2 started"] = _verify(case, 7, 2, started=True)
    assert child_pids() == [], "worker processes were left behind"
    return reports


def _problem(case: Case, modes: tuple[tuple[int, int], ...] = MODES) -> Problem:
    """The problem every mode reports (they must agree)."""
    problems = {mode: report.problem for mode, report in _reports(case, modes).items()}
    first = next(iter(problems.values()))
    assert first is not None, "tampering went unnoticed"
    assert all(p == first for p in problems.values()), "modes disagree:\n" + "\n".join(
        f"  {mode}: {p}" for mode, p in problems.items()
    )
    return first


def _problem_after_change(
    case: Case, table: str, column: str, where: str, change: Any, **params: Any
) -> Problem:
    """Change one stored value, verify in every mode, put the value back."""
    select = f"SELECT {column} FROM {table} WHERE {where}"  # noqa: S608 - test SQL
    update = f"UPDATE {table} SET {column} = :new WHERE {where}"  # noqa: S608 - test SQL
    old = case.one(select, **params)
    case.run(update, new=change(old), **params)
    try:
        return _problem(case)
    finally:
        case.run(update, new=old, **params)


def _restored(case: Case) -> None:
    report = _verify(case, 5000, 1)
    assert report.ok, f"restoring the copy failed: {report.problem}"


def _rewrite_leaf(case: Case, seq: int, **changes: Any) -> None:
    """Re-encode entry ``seq`` with ``changes`` and store it consistently (leaf, leaf hash and
    columns agree), so only what links it to its neighbours can tell."""
    leaf = case.one("SELECT leaf FROM entries WHERE seq = :s", s=seq)
    header = dataclasses.replace(parse_leaf(leaf), **changes)
    new = header.encode()
    case.run(
        "UPDATE entries SET leaf = :l, leaf_hash = :h, event_type = :t, recorded_at = :r"
        " WHERE seq = :s",
        l=new,
        h=leaf_hash(new),
        t=header.event_type,
        r=header.recorded_at,
        s=seq,
    )


# --- zero false alarms -------------------------------------------------------------------------


def test_untouched_log_gives_the_same_report_in_every_mode(case: Case) -> None:
    dicts = {}
    for chunk, jobs, started in (
        *((c, j, False) for c, j in MODES),
        (SIZE, 2, False),
        (1, 2, False),
        (7, 2, True),
    ):
        seen: list[int] = []
        report = _verify(case, chunk, jobs, started=started, progress=seen.append)
        dicts[chunk, jobs, started] = report.to_dict()
        assert seen == sorted(seen), (chunk, jobs, seen)
        assert seen[-1] == SIZE, (chunk, jobs, seen)
    assert child_pids() == [], "worker processes were left behind"
    first = dicts[(*MODES[0], False)]
    assert first["ok"] is True, first
    assert (first["size"], first["checkpoints"]) == (SIZE, len(CHECKPOINTS))
    assert (first["payloads_present"], first["payloads_purged"]) == (SIZE - 3, 3)
    assert first["keys_checked"] != 0
    assert first["root"] == case.ledger.verification.run(jobs=1).root
    for mode, report in dicts.items():
        assert report == first, mode


def test_entries_stored_out_of_seq_order_verify_as_in_order(case: Case) -> None:
    """PostgreSQL hands a range of entries over in storage order and verification sorts them
    (storage/integrity.py): a table rewritten in another order verifies exactly as before."""
    if case.backend != "postgresql":
        pytest.skip("SQLite reads a range in seq order itself")
    before = _verify(case, 5000, 1).to_dict()
    # Rewritten in event-id order: random with respect to seq.
    case.run("CLUSTER entries USING entries_event_id_key")
    stored = case.one("SELECT string_agg(seq::text, ',') FROM (SELECT seq FROM entries) s")
    assert stored.split(",")[:5] != ["0", "1", "2", "3", "4"]  # no longer stored in seq order
    for chunk, jobs in MODES:
        assert _verify(case, chunk, jobs).to_dict() == before, (chunk, jobs)


# --- entries -----------------------------------------------------------------------------------

#: First and last entries of ranges of 7 (0 | 6, 7 | 13, 14), a middle one, the last one.
SAMPLE = (0, 6, 7, 13, 14, 150, 299)


def test_leaf_byte_flip(case: Case) -> None:
    for seq, where in ((0, 0.0), (6, 0.5), (7, 0.3), (14, 1.0), (299, 0.6)):
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


def test_leaf_hash_byte_flip(case: Case) -> None:
    for seq in (6, 7):
        problem = _problem_after_change(
            case, "entries", "leaf_hash", "seq = :s", lambda h, s=seq: _flip(h, s % 32), s=seq
        )
        assert problem.seq == seq, problem
        assert "leaf hash" in problem.reason
    _restored(case)


@pytest.mark.parametrize(
    ("seq", "expected_seq", "reason"),
    [
        # The last entry of a range: the next range's first entry links to the old leaf, and
        # the subtree (1, 6) it completes no longer matches.
        (13, 13, "stored subtree hash (1, 6)"),
        # Same at the end of [0, 7), which completes no subtree: the seam names seq 7.
        (6, 7, "prev does not match"),
        # The first entry of a range, which completes (1, 3): found there, not at seq 8.
        (7, 7, "stored subtree hash (1, 3)"),
        # Entries that complete no subtree, inside a range.
        (150, 151, "prev does not match"),
    ],
)
def test_consistent_leaf_rewrite_breaks_the_link_after_it(
    case: Case, seq: int, expected_seq: int, reason: str
) -> None:
    _rewrite_leaf(case, seq, event_type="refund_forged")
    problem = _problem(case)
    assert problem.seq == expected_seq, problem
    assert reason in problem.reason, problem


@pytest.mark.parametrize("seq", [7, 151])
def test_recorded_at_going_back_is_found_at_the_seam_or_inside(case: Case, seq: int) -> None:
    """``recorded_at`` earlier than the entry before (rewritten consistently: only the order of
    timestamps and the next link tell)."""
    _rewrite_leaf(case, seq, recorded_at="2001-01-01T00:00:00.000000Z")
    problem = _problem(case)
    assert problem.seq == seq, problem
    assert "recorded_at decreases" in problem.reason


TEXT_COLUMNS = ("event_id", "category", "event_type", "occurred_at", "recorded_at", "writer")


def test_stored_column_change(case: Case) -> None:
    for column, seq in zip(TEXT_COLUMNS, SAMPLE, strict=False):
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


@pytest.mark.parametrize("seq", [100, 105, 299])
def test_delete_an_entry(case: Case, seq: int) -> None:
    """A missing entry in the middle of a range, at the start of one, at the end of the log."""
    _delete_entries(case, "seq = :s", s=seq)
    problem = _problem(case)
    if seq == SIZE - 1:  # the tail: the checkpoint of size 300 is what can tell
        assert problem.checkpoint == SIZE or problem.seq == seq, problem
    else:
        assert problem.seq == seq, problem
        assert "missing entry (gap)" in problem.reason


@pytest.mark.parametrize(
    "deleted",
    [
        (20,),  # the last entry of [14, 21): it completes no stored subtree
        (12, 13),  # the last two of [7, 14): seq 13 completes the stored subtree (1, 6)
        (109, 110, 111),  # the end of [105, 112): seq 111 completes (1, 55) … (4, 6)
    ],
)
def test_delete_the_last_entries_of_a_range(case: Case, deleted: tuple[int, ...]) -> None:
    """A range that ends early: the gap is the first missing seq, whichever the mode."""
    _delete_entries(case, "seq >= :lo AND seq <= :hi", lo=deleted[0], hi=deleted[-1])
    problem = _problem(case)
    assert problem.seq == deleted[0], problem
    assert problem.reason == f"missing entry (gap): got {deleted[-1] + 1}", problem


def test_delete_a_whole_range_in_the_middle(case: Case) -> None:
    """Seqs 20..29 gone: with ranges of 10, an empty range followed by more entries."""
    _delete_entries(case, "seq >= 20 AND seq < 30")
    problem = _problem(case, (*MODES, (10, 1), (10, 2)))
    assert problem.seq == 20, problem
    assert problem.reason == "missing entry (gap): got 30", problem


def test_delete_the_tail_without_touching_anything_else(case: Case) -> None:
    """Entries 290..299 gone, head, tree and checkpoints left as they were."""
    _delete_entries(case, "seq >= 290")
    problem = _problem(case)
    assert problem.checkpoint == SIZE or problem.seq == 290, problem


def test_swap_two_entries(case: Case) -> None:
    for a, b in ((10, 11), (13, 14), (5, 180)):
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
                assert _problem(case).seq == a, (a, b)
    _restored(case)


@pytest.mark.parametrize(("keep", "checkpoint"), [(299, 300), (200, 300)])
def test_consistent_truncation_is_caught_by_the_checkpoint(
    case: Case, keep: int, checkpoint: int
) -> None:
    """The newest entries removed with the tree and head made consistent (as in test_tamper)."""
    hashes = _leaf_hashes(case, keep)
    last_recorded = case.one("SELECT recorded_at FROM entries WHERE seq = :s", s=keep - 1)
    _delete_entries(case, "seq >= :k", k=keep)
    with case.engine.connect() as conn, conn.begin():
        for level, idx in conn.execute(text("SELECT level, idx FROM tree_nodes")).all():
            if (idx + 1) << level > keep:
                conn.execute(
                    text("DELETE FROM tree_nodes WHERE level = :l AND idx = :i"),
                    {"l": level, "i": idx},
                )
    _set_head(case, hashes, last_recorded)
    problem = _problem(case)
    assert problem.checkpoint == checkpoint, problem


# --- refs, tree nodes, payloads ----------------------------------------------------------------


def test_ref_value_change(case: Case) -> None:
    for seq in (0, 13, 150):
        problem = _problem_after_change(
            case,
            "entry_refs",
            "value",
            "seq = :s AND name = 'user'",
            lambda value, s=seq: _alter(value, s % len(value)),
            s=seq,
        )
        assert problem.seq == seq, problem
        assert "refs" in problem.reason
    _restored(case)


def test_refs_row_deleted(case: Case) -> None:
    case.run("DELETE FROM entry_refs WHERE seq = 14")
    problem = _problem(case)
    assert problem.seq == 14, problem


def test_extra_refs_row(case: Case) -> None:
    """A refs row the header does not list, on the last entry of a range of 7."""
    case.run("INSERT INTO entry_refs (seq, name, value) VALUES (6, 'extra', :v)", v="ab" * 16)
    problem = _problem(case)
    assert problem.seq == 6, problem
    assert "refs" in problem.reason


#: A row of each table that points at no entry: past the end of the log, or before its start.
ORPHAN_ROWS = {
    "refs past the end": "INSERT INTO entry_refs (seq, name, value) VALUES (400, 'user', 'ab')",
    "refs before the start": "INSERT INTO entry_refs (seq, name, value) VALUES (-1, 'user', 'ab')",
    "payload past the end": "INSERT INTO payloads (seq, blob) VALUES (300, X'00')",
    "purge past the end": "INSERT INTO payload_purges (seq, op_seq, reason) VALUES (350, 0, 'x')",
    "subtree hash past the end": "INSERT INTO tree_nodes (level, idx, hash) VALUES (2, 75, X'00')",
}


@pytest.mark.parametrize("row", sorted(ORPHAN_ROWS))
def test_a_row_of_no_entry(case: Case, row: str) -> None:
    insert = ORPHAN_ROWS[row]
    if case.backend == "sqlite":  # past the foreign keys, as a superuser can
        conn = sqlite3.connect(case.url.removeprefix("sqlite:///"))
        try:
            conn.execute("PRAGMA foreign_keys = OFF")
            conn.execute(insert)
            conn.commit()
        finally:
            conn.close()
    else:
        case.run(insert.replace("X'00'", "'\\x00'::bytea"))
    for name, problem in _reports(case).items():
        assert problem.problem is not None, name
        assert "no entry" in problem.problem.reason, (name, problem.problem)


#: (level, idx) -> seq of the leaf that completes it: (idx + 1) * 2**level - 1.
NODES = ((1, 0), (1, 6), (3, 1), (8, 0), (2, 74))


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


def test_tree_node_deleted(case: Case) -> None:
    case.run("DELETE FROM tree_nodes WHERE level = 2 AND idx = 3")
    problem = _problem(case)
    assert problem.seq == 15, problem


def test_extra_tree_node(case: Case) -> None:
    case.run("INSERT INTO tree_nodes (level, idx, hash) VALUES (1, 400, :h)", h=b"\x07" * 32)
    assert _problem(case).seq is None


@pytest.mark.parametrize("seq", [0, 13, 14, 299])
def test_payload_byte_flip(case: Case, seq: int) -> None:
    problem = _problem_after_change(
        case, "payloads", "blob", "seq = :s", lambda b: _flip(b, seq % len(b)), s=seq
    )
    assert problem.seq == seq, problem
    assert "payload" in problem.reason


def test_payload_deleted_without_purge_record(case: Case) -> None:
    case.run("DELETE FROM payloads WHERE seq = 21")
    problem = _problem(case)
    assert problem.seq == 21, problem
    assert "payload" in problem.reason


def test_purge_record_naming_a_user_event(case: Case) -> None:
    case.run("DELETE FROM payloads WHERE seq = 64")
    case.run("INSERT INTO payload_purges (seq, op_seq, reason) VALUES (64, 65, 'retention')")
    assert _problem(case).seq == 64


def test_purge_record_removed_from_an_erased_entry(case: Case) -> None:
    case.run("DELETE FROM payload_purges WHERE seq = :s", s=ERASED_AT[1])
    problem = _problem(case)
    assert problem.seq == ERASED_AT[1], problem


# --- checkpoints, head, keys -------------------------------------------------------------------


def _note_position(note: str, part: str) -> int:
    lines = note.split("\n")
    starts = [sum(len(x) + 1 for x in lines[:i]) for i in range(len(lines))]
    return {"origin": 2, "size": starts[1], "root": starts[2] + 5, "signature": len(note) - 10}[
        part
    ]


def test_checkpoint_change(case: Case) -> None:
    for size, part in ((30, "origin"), (104, "root"), (300, "signature")):
        problem = _problem_after_change(
            case,
            "checkpoints",
            "note",
            "tree_size = :n",
            lambda note, part=part: _alter(note, _note_position(note, part)),
            n=size,
        )
        assert problem.checkpoint == size, (part, problem)
    for size in (165,):
        problem = _problem_after_change(
            case, "checkpoints", "root_hash", "tree_size = :n", lambda r: _flip(r, 7), n=size
        )
        assert problem.checkpoint == size, problem
    _restored(case)


HEAD_CHANGES: tuple[tuple[str, Any], ...] = (
    ("size", lambda n: n - 1),
    ("last_leaf_hash", lambda h: _flip(h, 0)),
    ("frontier", lambda f: _flip(f, 40)),
)


def test_head_change(case: Case) -> None:
    for column, change in HEAD_CHANGES:
        problem = _problem_after_change(case, "ledger_head", column, "id = 1", change)
        assert "head" in problem.reason, (column, problem)
    _restored(case)


def test_wrapped_data_key_flip(case: Case) -> None:
    key_id: str = case.one(
        "SELECT key_id FROM data_keys WHERE category = 'security_events' AND wrapped IS NOT NULL"
        " ORDER BY key_id LIMIT 1"
    )
    problem = _problem_after_change(
        case, "data_keys", "wrapped", "key_id = :k", lambda w: _flip(w, 20), k=key_id
    )
    assert problem.key_id == key_id, problem


def test_ledger_verify_with_a_missing_head_row_reports_it(case: Case) -> None:
    """``Ledger.verify`` picks the number of jobs itself; a deleted head row is tampering to
    report (as with explicit jobs), not a crash while sizing the log."""
    case.run("DELETE FROM ledger_head")
    explicit = case.ledger.verification.run(jobs=2)
    assert explicit.problem is not None
    assert "head" in explicit.problem.reason
    automatic = case.ledger.verification.run()
    assert automatic.problem == explicit.problem


# --- the command line --------------------------------------------------------------------------


def test_cli_verify_with_two_jobs(case: Case) -> None:
    env = env_for(case.url, case.keys_dir)
    result = cli("verify", "--jobs", "2", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == _verify(case, 5000, 1).to_dict()
    assert json.loads(result.stdout)["ok"] is True

    leaf = case.one("SELECT leaf FROM entries WHERE seq = 64")
    case.run("UPDATE entries SET leaf = :l WHERE seq = 64", l=_flip(leaf, len(leaf) // 2))
    result = cli("verify", "--jobs", "2", env=env)
    assert result.returncode == 1, result.stderr
    assert "seq 64" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert child_pids() == []


# --- workers that die --------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("when", [1, 5])
def test_a_worker_that_dies_mid_verify_is_a_clear_error(case: Case, when: int) -> None:
    killed: list[int] = []

    def progress(size: int) -> None:
        if size >= when * 7 and not killed:
            killed.extend(kill_children())

    with pytest.raises(StorageError, match="a worker process exited unexpectedly"):
        _verify(case, 7, 2, progress=progress)
    assert len(killed) == 2, killed
    assert child_pids() == [], "worker processes were left behind"
    # Nothing is wrong with the log itself.
    assert _verify(case, 7, 2).ok
    assert child_pids() == []


@pytest.mark.timeout(60)
def test_one_worker_dying_is_enough_to_stop(case: Case) -> None:
    killed: list[int] = []

    def progress(size: int) -> None:
        if not killed:
            pid = child_pids()[-1]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with pytest.raises(StorageError, match="a worker process exited unexpectedly"):
        _verify(case, 7, 2, progress=progress)
    assert child_pids() == []


#: Other sessions of the test's database than the one asking, with what they wait for.
_SESSIONS = (
    "SELECT pid, wait_event_type FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
@pytest.mark.parametrize("fork", [False, True], ids=["started", "forked"])
def test_workers_of_a_killed_owner_stop_and_close_their_sessions(
    settings: Settings, tmp_path: Path, fork: bool
) -> None:
    """The process owning verify's workers is killed with SIGKILL while the workers' queries
    wait on a lock. The workers must stop (SIGTERM from the kernel when their parent dies) and
    take their sessions with them — their queries cancelled, not left waiting in the server for
    a client that is gone."""
    url = settings.database_url
    with psycopg.connect(url, autocommit=True) as watcher, psycopg.connect(url) as locker:
        locker.execute("LOCK TABLE entries IN ACCESS EXCLUSIVE MODE")  # until the end
        others = {locker.info.backend_pid}

        def worker_sessions() -> list[tuple[int, str | None]]:
            rows = watcher.execute(_SESSIONS).fetchall()
            return [(pid, wait) for pid, wait in rows if pid not in others]

        with pool_owner(
            tmp_path / "owner.json",
            "verify",
            {"database_url": url},
            [[0, 10], [10, 20]],
            fork=fork,
        ) as (owner, workers):
            deadline = time.monotonic() + 30
            while [wait for _, wait in worker_sessions()] != ["Lock", "Lock"]:
                assert owner.poll() is None, "the pool's owner exited"
                assert time.monotonic() < deadline, worker_sessions()
                time.sleep(0.05)
            owner.kill()
            owner.wait()
            left = alive_after(workers, ORPHAN_TIMEOUT)
            assert left == [], f"workers {left} outlived the process that owned them"
            deadline = time.monotonic() + ORPHAN_TIMEOUT
            while (sessions := worker_sessions()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sessions == [], "the workers' sessions outlived them"


# --- forked workers and the connections of this process ---------------------------------------


def test_forked_workers_leave_this_process_connected(case: Case) -> None:
    """Workers are forked only once this process's pooled connections are closed (none may be
    inherited: a PostgreSQL connection is a session the child must not share); this process
    reconnects afterwards and goes on. SQLite never forks (its per-process books of open files
    would follow the fork): the workers are started, with the same result."""
    store = case.ledger.store
    with store.engine.connect():
        assert not store.release_connections(), "a connection in use was closed"
    assert case.ledger.log.size() == SIZE
    assert store.release_connections() == (case.backend == "postgresql")
    assert store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    report = _verify(case, 7, 2)
    assert report.ok, report.problem
    assert child_pids() == []
    # This process's store reconnects, reads and writes as before.
    assert case.ledger.log.size() == SIZE
    case.ledger.appends.append(case.ledger.appends.prepare_batch([event()]), "bot")
    assert _verify(case, 7, 2).ok
    assert case.ledger.log.size() == SIZE + 1
