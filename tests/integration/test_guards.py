"""The guard triggers (DESIGN §5) reject every change the ledger's tables must never see.

Each table gets its forbidden statements run as raw SQL, each in its own transaction, on a log
that holds entries, refs, tree nodes, a checkpoint, a purged payload with its purge record and a
destroyed data key. On PostgreSQL every rejection is repeated with
``session_replication_role = replica`` (the guards are ``ENABLE ALWAYS``) and ``TRUNCATE`` is
tried too. Afterwards every table must hold exactly what it held before and the log must verify.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from audit_ledger.ledger.service import Ledger
from audit_ledger.settings import Settings
from audit_ledger.storage.engine import create_engine_for_url
from tests.support.factories import event

TABLES = (
    "entries",
    "entry_refs",
    "tree_nodes",
    "checkpoints",
    "payload_purges",
    "payloads",
    "data_keys",
    "ledger_head",
    "legal_holds",
)
DESTROYED_AT = "2026-12-01T00:00:00.000000Z"


@dataclass
class Log:
    """What the populated log holds (ids the statements need)."""

    engine: Engine
    backend: str
    size: int
    purged_seq: int
    op_seq: int
    live_key: str
    destroyed_key: str
    #: a live subject key (its row holds the key-store marker, not the wrapped key)
    subject_key: str
    active_hold: str
    released_hold: str


def _run(engine: Engine, sql: str, params: dict[str, Any] | None = None, *, replica: bool) -> None:
    with engine.connect() as conn, conn.begin():
        if replica:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(sql), params or {})


def _snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with engine.connect() as conn, conn.begin():
        for table in TABLES:
            rows = conn.execute(text(f"SELECT * FROM {table}")).all()  # noqa: S608 - fixed names
            out[table] = sorted(
                (tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows),
                key=repr,
            )
    return out


@pytest.fixture
def log(ledger: Ledger, settings: Settings, backend: str) -> Iterator[Log]:
    raws = [
        event(),
        event("data_privacy_events", user_id=1),
        event("security_events"),
        event(),
        event("data_privacy_events", user_id=2),
    ]
    ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
    keys = sorted((k.created_at, k.key_id, k.scope_kind) for k in ledger.store.iter_keys())
    subject_key, live_subject_key = [key_id for _, key_id, kind in keys if kind == "subject"]
    # The allowed changes made below by hand are what this run records (verify checks that).
    # A security event's payload: since migration 0004 retention may not purge a financial one.
    purged_seq = 2
    op = ledger.operations.record(
        "retention_run",
        {
            "categories": {
                "security_events": {"seq_ranges": [[2, 2]], "keys_destroyed": []},
                "data_privacy_events": {"seq_ranges": [], "keys_destroyed": [subject_key]},
            }
        },
    )
    ledger.appends.append(ledger.appends.prepare_batch([event(), event("security_events")]), "bot")
    active_hold = ledger.holds.create("category", value="security_events", reason="audit")
    released_hold = ledger.holds.create("subject", value=1)
    ledger.holds.release(released_hold.hold_id)
    assert ledger.log.checkpoint() is not None
    engine = create_engine_for_url(settings.database_url)
    # The allowed changes: record a purge, then delete that payload; destroy a data key.
    with engine.connect() as conn, conn.begin():
        conn.execute(
            text("INSERT INTO payload_purges (seq, op_seq, reason) VALUES (:s, :o, 'retention')"),
            {"s": purged_seq, "o": op.seq},
        )
        conn.execute(text("DELETE FROM payloads WHERE seq = :s"), {"s": purged_seq})
        live_key = conn.execute(
            text("SELECT key_id FROM data_keys WHERE category = 'financial_transactions'")
        ).scalar_one()
        conn.execute(
            text(
                "UPDATE data_keys SET wrapped = NULL, destroyed_at = :at, destroyed_by_seq = :op"
                " WHERE key_id = :k"
            ),
            {"at": DESTROYED_AT, "op": op.seq, "k": subject_key},
        )
    report = ledger.verification.run()
    assert report.ok, report.problem
    assert report.payloads_purged == 1
    try:
        yield Log(
            engine,
            backend,
            ledger.log.size(),
            purged_seq,
            op.seq,
            live_key,
            subject_key,
            live_subject_key,
            active_hold.hold_id,
            released_hold.hold_id,
        )
    finally:
        engine.dispose()


def _forbidden(log: Log, table: str) -> list[tuple[str, dict[str, Any]]]:
    """Statements that must be rejected, by table (each names rows that exist)."""
    last = log.size - 1
    blob = {"b": b"\x00" * 40}
    live = {"k": log.live_key}
    dead = {"k": log.destroyed_key}
    active = {"h": log.active_hold}
    released = {"h": log.released_hold}
    statements: dict[str, list[tuple[str, dict[str, Any]]]] = {
        "entries": [
            ("UPDATE entries SET writer = 'mallory' WHERE seq = 1", {}),
            ("UPDATE entries SET leaf = :b WHERE seq = 1", blob),
            ("DELETE FROM entries WHERE seq = :s", {"s": last}),
            ("DELETE FROM entries", {}),
        ],
        "entry_refs": [
            ("UPDATE entry_refs SET value = 'ff' WHERE seq = 1", {}),
            ("DELETE FROM entry_refs WHERE seq = 1", {}),
            ("DELETE FROM entry_refs", {}),
        ],
        "tree_nodes": [
            ("UPDATE tree_nodes SET hash = :b WHERE level = 1 AND idx = 0", blob),
            ("DELETE FROM tree_nodes WHERE level = 1 AND idx = 0", {}),
            ("DELETE FROM tree_nodes", {}),
        ],
        "checkpoints": [
            ("UPDATE checkpoints SET note = 'forged'", {}),
            ("UPDATE checkpoints SET root_hash = :b", blob),
            ("DELETE FROM checkpoints", {}),
        ],
        "payload_purges": [
            ("UPDATE payload_purges SET reason = 'erasure'", {}),
            ("UPDATE payload_purges SET op_seq = 1", {}),
            ("DELETE FROM payload_purges", {}),
        ],
        "payloads": [
            ("UPDATE payloads SET blob = :b WHERE seq = 1", blob),
            ("DELETE FROM payloads WHERE seq = 1", {}),  # no purge recorded for seq 1
            ("DELETE FROM payloads", {}),
        ],
        "data_keys": [
            ("DELETE FROM data_keys WHERE key_id = :k", live),
            ("DELETE FROM data_keys WHERE key_id = :k", dead),
            ("UPDATE data_keys SET uses = uses - 1 WHERE key_id = :k", live),
            ("UPDATE data_keys SET uses = 0 WHERE key_id = :k", live),
            ("UPDATE data_keys SET scope_value = 'other' WHERE key_id = :k", live),
            ("UPDATE data_keys SET scope_value = 'other' WHERE key_id = :k", dead),
            ("UPDATE data_keys SET category = 'security_events' WHERE key_id = :k", live),
            ("UPDATE data_keys SET scope_kind = 'subject' WHERE key_id = :k", live),
            ("UPDATE data_keys SET kek_id = 'kek-other' WHERE key_id = :k", live),
            (
                "UPDATE data_keys SET created_at = :at WHERE key_id = :k",
                {**live, "at": DESTROYED_AT},
            ),
            ("UPDATE data_keys SET key_id = 'dk_other' WHERE key_id = :k", live),
            # a live key's wrapped bytes may only be replaced under another KEK (rotation),
            # and a KEK id alone changes only for a key kept in the key store
            ("UPDATE data_keys SET wrapped = :b WHERE key_id = :k", {**live, **blob}),
            (
                "UPDATE data_keys SET wrapped = :b, destroyed_at = :at WHERE key_id = :k",
                {**live, **blob, "at": DESTROYED_AT},
            ),
            (
                "UPDATE data_keys SET wrapped = :b, destroyed_by_seq = 1 WHERE key_id = :k",
                {**live, **blob},
            ),
            (
                (
                    "UPDATE data_keys SET wrapped = NULL, destroyed_at = :at, destroyed_by_seq = 1,"
                    " kek_id = 'kek-0123456789abcdef' WHERE key_id = :k"
                ),
                {**live, "at": DESTROYED_AT},
            ),
            # destruction must name when and which entry recorded it
            ("UPDATE data_keys SET wrapped = NULL WHERE key_id = :k", live),
            (
                "UPDATE data_keys SET wrapped = NULL, destroyed_at = :at WHERE key_id = :k",
                {**live, "at": DESTROYED_AT},
            ),
            # a destroyed key stays destroyed, with its record unchanged
            ("UPDATE data_keys SET wrapped = :b WHERE key_id = :k", {**dead, **blob}),
            ("UPDATE data_keys SET destroyed_at = NULL WHERE key_id = :k", dead),
            (
                "UPDATE data_keys SET destroyed_at = :at WHERE key_id = :k",
                {**dead, "at": "2027-01-01T00:00:00.000000Z"},
            ),
            ("UPDATE data_keys SET destroyed_by_seq = 1 WHERE key_id = :k", dead),
            ("UPDATE data_keys SET kek_id = 'kek-0123456789abcdef' WHERE key_id = :k", dead),
            (
                "UPDATE data_keys SET wrapped = :b, kek_id = :kek WHERE key_id = :k",
                {**dead, **blob, "kek": "kek-0123456789abcdef"},
            ),
            ("DELETE FROM data_keys", {}),
        ],
        "ledger_head": [
            ("DELETE FROM ledger_head", {}),
            ("UPDATE ledger_head SET size = size - 1", {}),
            ("UPDATE ledger_head SET size = 0", {}),
            ("UPDATE ledger_head SET id = 2", {}),
        ],
        "legal_holds": [
            ("DELETE FROM legal_holds WHERE hold_id = :h", active),
            ("DELETE FROM legal_holds WHERE hold_id = :h", released),
            ("UPDATE legal_holds SET scope = 'order' WHERE hold_id = :h", active),
            (
                "UPDATE legal_holds SET scope_value = 'data_privacy_events' WHERE hold_id = :h",
                active,
            ),
            (
                "UPDATE legal_holds SET since = :at WHERE hold_id = :h",
                {**active, "at": DESTROYED_AT},
            ),
            (
                "UPDATE legal_holds SET until = :at WHERE hold_id = :h",
                {**active, "at": DESTROYED_AT},
            ),
            ("UPDATE legal_holds SET created_by = 'mallory' WHERE hold_id = :h", active),
            ("UPDATE legal_holds SET created_seq = 0 WHERE hold_id = :h", active),
            ("UPDATE legal_holds SET hold_id = 'other' WHERE hold_id = :h", active),
            # a released hold stays released, with its release record unchanged
            ("UPDATE legal_holds SET released_seq = NULL WHERE hold_id = :h", released),
            ("UPDATE legal_holds SET released_by = NULL WHERE hold_id = :h", released),
            ("UPDATE legal_holds SET released_seq = 0 WHERE hold_id = :h", released),
            ("DELETE FROM legal_holds", {}),
        ],
    }
    out = statements[table]
    if log.backend == "postgresql":
        out = [*out, (f"TRUNCATE {table} CASCADE", {})]
    return out


@pytest.mark.parametrize("table", TABLES)
def test_guard_rejects_changes(log: Log, table: str) -> None:
    before = _snapshot(log.engine)
    modes = [False, True] if log.backend == "postgresql" else [False]
    not_rejected: list[str] = []
    wrong_error: list[str] = []
    for replica in modes:
        for sql, params in _forbidden(log, table):
            label = f"{sql} (replica)" if replica else sql
            try:
                _run(log.engine, sql, params, replica=replica)
            except DBAPIError as exc:
                message = str(exc.orig)
                # The guard itself must refuse (not a foreign key or another constraint).
                by_guard = "audit-ledger" in message and (
                    not sql.startswith("TRUNCATE") or f"TRUNCATE on {table}" in message
                )
                if not by_guard:
                    wrong_error.append(f"{label}: {message.splitlines()[0]}")
            else:
                not_rejected.append(label)
    assert not_rejected == [], "statements the guards let through"
    assert wrong_error == [], "statements refused by something other than the guard"
    assert _snapshot(log.engine) == before


def test_guards_allow_the_permitted_changes(log: Log, ledger: Ledger) -> None:
    """The guards are not blanket bans: head growth, counting key uses and destruction pass."""
    with log.engine.connect() as conn:
        # Since 0004 a release must name a legal_hold_released entry: reuse the other release's.
        release_seq = conn.execute(
            text("SELECT released_seq FROM legal_holds WHERE hold_id = :h"),
            {"h": log.released_hold},
        ).scalar_one()
    allowed = [
        ("UPDATE ledger_head SET size = size + 1", {}),
        ("UPDATE ledger_head SET size = size", {}),
        ("UPDATE data_keys SET uses = uses + 5 WHERE key_id = :k", {"k": log.live_key}),
        (
            (
                "UPDATE data_keys SET wrapped = NULL, destroyed_at = :at, destroyed_by_seq = :op"
                " WHERE key_id = :k"
            ),
            {"at": DESTROYED_AT, "op": log.op_seq, "k": log.live_key},
        ),
        # KEK rotation: re-wrapped under another KEK; a key-store key only names the new KEK
        (
            "UPDATE data_keys SET wrapped = :b, kek_id = 'kek-0123456789abcdef' WHERE key_id=:k",
            {"b": b"\x01" * 60, "k": log.live_key},
        ),
        (
            "UPDATE data_keys SET kek_id = 'kek-0123456789abcdef' WHERE key_id = :k",
            {"k": log.subject_key},
        ),
        # touching a destroyed key without changing it (e.g. a retention re-run) is fine
        ("UPDATE data_keys SET uses = uses WHERE key_id = :k", {"k": log.destroyed_key}),
        (
            "UPDATE legal_holds SET released_by = 'cli', released_seq = :op WHERE hold_id = :h",
            {"op": release_seq, "h": log.active_hold},
        ),
    ]
    for sql, params in allowed:
        with log.engine.connect() as conn:
            trans = conn.begin()
            conn.execute(text(sql), params)
            assert conn.execute(text("SELECT count(*) FROM ledger_head")).scalar_one() == 1
            trans.rollback()
    # A payload whose purge is recorded may go (done by the fixture): the log still verifies.
    with log.engine.connect() as conn, conn.begin():
        assert (
            conn.execute(
                text("SELECT count(*) FROM payloads WHERE seq = :s"), {"s": log.purged_seq}
            ).scalar_one()
            == 0
        )
    assert ledger.verification.run().ok


def test_guards_survive_appends(log: Log, ledger: Ledger) -> None:
    """The application's own writes (head update, key use counting) pass the guards."""
    before = ledger.log.size()
    receipts = ledger.appends.append(
        ledger.appends.prepare_batch([event(), event("data_privacy_events", user_id=3)]), "bot"
    )
    assert [r.seq for r in receipts] == [before, before + 1]
    assert ledger.log.checkpoint() is not None
    report = ledger.verification.run()
    assert report.ok, report.problem
