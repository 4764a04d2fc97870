"""``verify`` reports a stored value of the wrong type, encoding or length as tampering, and
never crashes (issue #12, item 3).

A small log touching every table verify reads (entries and their refs, subtree hashes and
payloads, an erasure with its purge records and destroyed data key, a principal, a signed
checkpoint with a witness cosignature, the head row) is built once per backend. Hypothesis then
writes random values — bytes, text, integers, floats, NULL, and near misses of the stored value
(truncated, extended, one byte flipped, bytes as text and text as bytes) — into one column of
one row at a time, with the guard triggers out of the way as a superuser can have them (DESIGN
§5), runs verify, and puts the value back.

Every change to a column the log commits to must be found. A few columns hold bookkeeping that
nothing in the log commits to (a data key's use count or creation time, a principal's row — the
chain binding of principals is issue #12 item 2): there a value of the right type may go
unnoticed, but a value of the wrong type (SQLite stores any type in any column) is still found.
On PostgreSQL the column types hold, so only values of each column's type are tried.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import Integer, LargeBinary, text
from sqlalchemy.exc import DBAPIError

from audit_ledger.core.checkpoint import split_note
from audit_ledger.core.cosignature import cosign, make_cosigner_key
from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.ledger.service import Ledger
from audit_ledger.storage.schema import metadata
from tests.support.factories import event
from tests.support.tamper import Case, Template, populated_template, tampering_copy

#: The tables verify reads (issue #12 item 3), every column of each.
TABLES = (
    "entries",
    "entry_refs",
    "tree_nodes",
    "payloads",
    "payload_purges",
    "data_keys",
    "checkpoints",
    "checkpoint_cosignatures",
    "ledger_head",
    "principals",
)
#: Columns nothing in the log commits to: a value of the right type may pass unnoticed.
BOOKKEEPING = {
    ("data_keys", "uses"),
    ("data_keys", "created_at"),
    ("data_keys", "destroyed_at"),
    ("data_keys", "scope_value"),
    ("data_keys", "kek_id"),  # of a destroyed key (a live one must unwrap under it)
    ("checkpoint_cosignatures", "received_at"),
    *(("principals", c.name) for c in metadata.tables["principals"].columns),
}
ERASED_USER = 7001


def _populate(ledger: Ledger) -> None:
    ledger.principals.add("officer", ["auditor"], actor="test")
    cats = ("financial_transactions", "data_privacy_events", "security_events")
    raws = [event(cats[n % 3], user_id=ERASED_USER if n % 2 else 7002) for n in range(9)]
    ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
    ledger.erasure.erase_subject(ERASED_USER, actor="test")
    raws = [event(cats[n % 3], user_id=7003) for n in range(4)]
    ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
    checkpoint = ledger.log.checkpoint()
    assert checkpoint is not None
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    witness = make_cosigner_key("witness.example/w1", public)
    body, _ = split_note(checkpoint.note)
    cosig = cosign(body, witness, private.sign, int(time.time()))
    with ledger.store.engine.connect() as conn, conn.begin():
        conn.execute(
            text(
                "INSERT INTO checkpoint_cosignatures"
                " (tree_size, witness, key_hash, timestamp, line, received_at)"
                " VALUES (:n, :w, :h, :t, :l, :r)"
            ),
            {
                "n": checkpoint.tree_size,
                "w": witness.name,
                "h": witness.key_hash.hex(),
                "t": cosig.timestamp,
                "l": cosig.line(),
                "r": format_timestamp(ledger.operations.clock()),
            },
        )


def _intact(ledger: Ledger) -> None:
    report = ledger.verification.run()
    assert report.ok, report.problem
    assert report.payloads_purged >= 1
    assert report.checkpoints == 1
    with ledger.store.engine.connect() as conn:
        for table in TABLES:
            count = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608
            assert count, f"the template has no {table} row to tamper with"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Template]:
    root = tmp_path_factory.mktemp("malformed")
    with populated_template(request, root, _populate, _intact) as populated:
        yield populated


@pytest.fixture(scope="module")
def case(template: Template, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Case]:
    tmp = tmp_path_factory.mktemp("malformed-copy")
    with tampering_copy(template.backend, template.location, template.keys_dir, tmp) as c:
        yield c


# --- values ------------------------------------------------------------------------------------


def _near_misses(old: Any) -> st.SearchStrategy[Any]:
    """Values close to the stored one, which get past a type check to the parsers behind it."""
    options: list[Any] = []
    if isinstance(old, bytes) and old:
        options += [old[:-1], old + b"\x00", old[1:], bytes([old[0] ^ 1]) + old[1:]]
        options.append(old.decode("latin-1"))  # the TEXT-instead-of-BLOB finding
        options.append(base64.b64encode(old).decode())
    if isinstance(old, str) and old:
        options += [old[:-1], old + " ", old.upper(), old.encode(), old[::-1]]
    if isinstance(old, int):
        options += [old + 1, old - 1, -old - 1, str(old) + "x", float(old) + 0.5]
    return st.sampled_from(options) if options else st.nothing()


ANY_VALUE = st.one_of(
    st.none(),
    st.binary(max_size=80),
    st.text(max_size=80),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)


def _typed(column: Any) -> st.SearchStrategy[Any]:
    """Values a PostgreSQL column of this type accepts."""
    values: st.SearchStrategy[Any]
    if isinstance(column.type, LargeBinary):
        values = st.binary(max_size=80)
    elif isinstance(column.type, Integer):  # BigInteger too
        values = st.integers(min_value=-(2**63), max_value=2**63 - 1)
    else:
        length = getattr(column.type, "length", None) or 80
        values = st.text(
            st.characters(codec="utf-8", exclude_characters="\x00"), max_size=min(length, 80)
        )
    return st.one_of(st.none(), values) if column.nullable else values


# --- one change at a time -------------------------------------------------------------------------


def _rows(case: Case, table: str) -> list[Any]:
    """Row handles: the rowid on SQLite, the primary key on PostgreSQL."""
    pk = [c.name for c in metadata.tables[table].primary_key.columns]
    key = "rowid" if case.backend == "sqlite" else ", ".join(pk)
    with case.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(f"SELECT {key} FROM {table} ORDER BY {key}"))]  # noqa: S608


_UNCHANGED = object()


def _where(
    case: Case, table: str, handle: tuple[Any, ...], column: str, new: Any = _UNCHANGED
) -> tuple[str, dict[str, Any]]:
    """Where-clause of the row ``handle``, after ``column`` was set to ``new`` (if given)."""
    changed = new is not _UNCHANGED
    if case.backend == "sqlite":
        # ledger_head.id is INTEGER PRIMARY KEY: SQLite's alias of the rowid itself
        alias = changed and (table, column) == ("ledger_head", "id")
        return "rowid = :k0", {"k0": new if alias else handle[0]}
    pk = [c.name for c in metadata.tables[table].primary_key.columns]
    parts, params = [], {}
    for i, name in enumerate(pk):
        parts.append(f"{name} = :k{i}")
        params[f"k{i}"] = new if changed and name == column else handle[i]
    return " AND ".join(parts), params


def _sqlite_type_ok(
    case: Case, table: str, column: str, where: str, params: dict[str, Any]
) -> bool:
    """Whether SQLite stored the value as the column's own type (after type affinity)."""
    col = metadata.tables[table].c[column]
    stored = case.one(f"SELECT typeof({column}) FROM {table} WHERE {where}", **params)  # noqa: S608
    expected = (
        "blob"
        if isinstance(col.type, LargeBinary)
        else ("integer" if isinstance(col.type, Integer) else "text")
    )
    return stored == expected or (stored == "null" and bool(col.nullable))


COLUMNS = [(t, c.name) for t in TABLES for c in metadata.tables[t].columns]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(data=st.data())
def test_any_stored_value_is_found_never_a_crash(case: Case, data: st.DataObject) -> None:
    table, column = data.draw(st.sampled_from(COLUMNS), label="column")
    rows = _rows(case, table)
    handle = data.draw(st.sampled_from(rows), label="row")
    col = metadata.tables[table].c[column]
    where, params = _where(case, table, handle, column)
    old = case.one(f"SELECT {column} FROM {table} WHERE {where}", **params)  # noqa: S608
    values = ANY_VALUE if case.backend == "sqlite" else _typed(col)
    new = data.draw(st.one_of(values, _near_misses(old)), label="value")
    if (
        case.backend == "postgresql"
        and isinstance(new, float | bytes | str)
        and not isinstance(new, type(old) if old is not None else type(new))
    ):
        new = old  # a near miss of another type: PostgreSQL refuses it (tried on SQLite)
    if new == old and type(new) is type(old):
        return
    length = getattr(col.type, "length", None)
    if case.backend == "postgresql" and isinstance(new, str) and length and len(new) > length:
        return  # PostgreSQL refuses it, or trims trailing spaces back to the stored value
    try:
        case.run(f"UPDATE {table} SET {column} = :new WHERE {where}", new=new, **params)  # noqa: S608
    except DBAPIError:
        return  # refused by a constraint (NOT NULL, unique, length): no tampering to find
    after_where, after_params = _where(case, table, handle, column, new)
    stored = case.one(f"SELECT {column} FROM {table} WHERE {after_where}", **after_params)  # noqa: S608
    if stored == old and type(stored) is type(old):
        return  # type affinity turned it back into the stored value ('0' into 0)
    try:
        wrong_type = case.backend == "sqlite" and not _sqlite_type_ok(
            case, table, column, after_where, after_params
        )
        report = case.ledger.verification.run()  # must not raise
        note(f"{table}.{column} <- {new!r}: {report.problem}")
        # Named by a check that knows the value, not by verify's backstop for the unforeseen.
        assert report.problem is None or "cannot be read" not in report.problem.reason
        if (table, column) not in BOOKKEEPING or wrong_type:
            assert report.problem is not None, f"{table}.{column} = {new!r} went unnoticed"
    finally:
        case.run(
            f"UPDATE {table} SET {column} = :old WHERE {after_where}",  # noqa: S608
            old=old,
            **after_params,
        )


def test_copy_still_verifies_after_the_examples(case: Case) -> None:
    """Every example put its value back (and the untouched copy verifies: no false alarm)."""
    report = case.ledger.verification.run()
    assert report.ok, report.problem


# --- the reported finding, through the real command ----------------------------------------------


@pytest.mark.process
def test_leaf_stored_as_text_is_tampering_at_its_seq(template: Template, tmp_path: Path) -> None:
    """The finding of issue #12: on SQLite a leaf rewritten as TEXT made verify print a
    TypeError traceback. Now: exit 1, the seq named on stdout/stderr, no traceback."""
    with tampering_copy(template.backend, template.location, template.keys_dir, tmp_path) as c:
        if c.backend == "sqlite":
            c.run("UPDATE entries SET leaf = CAST(leaf AS TEXT) WHERE seq = 3")
        else:  # PostgreSQL keeps the type: the closest is a tool writing the leaf as hex text
            c.run("UPDATE entries SET leaf = convert_to(encode(leaf, 'hex'), 'UTF8') WHERE seq = 3")
        result = c.cli_verify()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "seq 3" in result.stdout + result.stderr
