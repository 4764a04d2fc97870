"""The ledger's persistence operations, on PostgreSQL and SQLite alike.

:meth:`Store.writer` opens the one write transaction shape the ledger uses (DESIGN §5): the head
row is locked first (``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), then
everything else is read and written under that lock, and the transaction commits or rolls back
as a whole. Reads use their own short transactions.

On PostgreSQL a large batch's rows go through ``COPY … FROM STDIN`` inside that same
transaction (one stream instead of one round trip per statement), and a small one's whole write
(rows, key uses, head) is one prepared statement, the columns travelling as arrays.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    and_,
    exists,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from audit_ledger.core.merkle import CompactRange
from audit_ledger.errors import DatabaseUnavailableError, DuplicateEntryError, StorageError
from audit_ledger.storage.engine import WRITE_OPTION
from audit_ledger.storage.schema import (
    checkpoints,
    data_keys,
    entries,
    entry_refs,
    ledger_head,
    legal_holds,
    payload_purges,
    payloads,
    principals,
    tree_nodes,
)

# --- records -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Head:
    """The log's current size and right edge."""

    size: int
    last_leaf_hash: bytes | None
    last_recorded_at: str | None
    frontier: CompactRange


# Not frozen: append and verify build one per entry, and a frozen dataclass's __init__ costs
# six times as much (object.__setattr__ per field). Nothing mutates them.
@dataclass(slots=True)
class StoredEntry:
    """One entry as stored, plus its payload state."""

    seq: int
    event_id: str
    category: str
    event_type: str
    occurred_at: str
    recorded_at: str
    writer: str
    key_id: str | None
    leaf_hash: bytes
    leaf: bytes
    payload: bytes | None = None
    purge_op_seq: int | None = None
    purge_reason: str | None = None


@dataclass(slots=True)
class EntryRows:
    """The rows a batch of new entries adds, per table, in column order (``entries`` as in
    :data:`ENTRY_ROW`). Built straight by the append path: one tuple per row, no record object
    in between, since every append of a bulk import builds thousands."""

    entries: list[tuple[Any, ...]] = field(default_factory=list)
    refs: list[tuple[int, str, str]] = field(default_factory=list)
    payloads: list[tuple[int, bytes]] = field(default_factory=list)
    #: completed subtree hashes (level >= 1; leaves are in ``entries``)
    nodes: list[tuple[int, int, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A data key row (wrapped key material, never plaintext)."""

    key_id: str
    category: str
    scope_kind: str
    scope_value: str
    kek_id: str
    wrapped: bytes | None
    uses: int
    created_at: str
    destroyed_at: str | None = None
    destroyed_by_seq: int | None = None


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    tree_size: int
    root_hash: bytes
    note: str


@dataclass(frozen=True, slots=True)
class StoredPrincipal:
    name: str
    token_hash: bytes
    roles: tuple[str, ...]
    created_at: str
    revoked_at: str | None


def _principal(row: Any) -> StoredPrincipal:
    return StoredPrincipal(
        row.name, bytes(row.token_hash), tuple(row.roles.split(",")), row.created_at, row.revoked_at
    )


@dataclass(frozen=True, slots=True)
class StoredHold:
    hold_id: str
    scope: str
    scope_value: str | None
    since: str | None
    until: str | None
    created_by: str
    created_seq: int
    released_by: str | None = None
    released_seq: int | None = None


def _hold(row: Any) -> StoredHold:
    return StoredHold(
        row.hold_id,
        row.scope,
        row.scope_value,
        row.since,
        row.until,
        row.created_by,
        row.created_seq,
        row.released_by,
        row.released_seq,
    )


def _chunks(items: Sequence[Any], size: int = 1000) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """Non-identifying filters plus blind-indexed refs; all optional and combined with AND."""

    categories: frozenset[str] | None = None
    event_type: str | None = None
    since: str | None = None  # canonical timestamp, inclusive
    until: str | None = None  # canonical timestamp, exclusive
    refs: Mapping[str, str] | None = None  # ref name -> blind index


_ENTRY_COLUMNS = (
    entries.c.seq,
    entries.c.event_id,
    entries.c.category,
    entries.c.event_type,
    entries.c.occurred_at,
    entries.c.recorded_at,
    entries.c.writer,
    entries.c.key_id,
    entries.c.leaf_hash,
    entries.c.leaf,
)
#: Column order of :attr:`EntryRows.entries`.
ENTRY_ROW = tuple(c.name for c in _ENTRY_COLUMNS)


def _key(row: Any) -> StoredKey:
    return StoredKey(
        key_id=row.key_id,
        category=row.category,
        scope_kind=row.scope_kind,
        scope_value=row.scope_value,
        kek_id=row.kek_id,
        wrapped=bytes(row.wrapped) if row.wrapped is not None else None,
        uses=row.uses,
        created_at=row.created_at,
        destroyed_at=row.destroyed_at,
        destroyed_by_seq=row.destroyed_by_seq,
    )


def _entry(row: Any, with_payload: bool = False) -> StoredEntry:
    return StoredEntry(
        seq=row.seq,
        event_id=row.event_id,
        category=row.category,
        event_type=row.event_type,
        occurred_at=row.occurred_at,
        recorded_at=row.recorded_at,
        writer=row.writer,
        key_id=row.key_id,
        leaf_hash=bytes(row.leaf_hash),
        leaf=bytes(row.leaf),
        payload=bytes(row.blob) if with_payload and row.blob is not None else None,
        purge_op_seq=row.op_seq if with_payload else None,
        purge_reason=row.reason if with_payload else None,
    )


def _completed_by(table: Any) -> ColumnElement[int]:
    """1 + the seq of the leaf that completes each stored subtree: ``(idx + 1) << level``."""
    shifted: ColumnElement[int] = (table.c.idx + 1).self_group().op("<<")(table.c.level)
    return shifted.self_group()


def nodes_completed_between(lo: int, hi: int) -> list[tuple[int, int, int]]:
    """``(level, first idx, last idx)`` of level>=1 subtrees completed by leaves ``lo..hi-1``.

    A subtree ``(L, i)`` is completed by leaf ``(i + 1) * 2**L - 1``.
    """
    out = []
    level = 1
    while (1 << level) <= hi:
        first = -(-(lo + 1) >> level) - 1  # ceil((lo + 1) / 2**L) - 1
        last = (hi >> level) - 1
        if first <= last:
            out.append((level, first, last))
        level += 1
    return out


def _keys_by_id(conn: Connection, key_ids: Sequence[str]) -> dict[str, StoredKey]:
    out: dict[str, StoredKey] = {}
    for part in _chunks(sorted(set(key_ids))):
        for r in conn.execute(select(data_keys).where(data_keys.c.key_id.in_(part))):
            out[r.key_id] = _key(r)
    return out


def _read_hashes(conn: Connection, indexes: Sequence[tuple[int, int]]) -> list[bytes]:
    """Stored hashes for ``(level, idx)``: level 0 from entries, the rest from tree_nodes (one
    query each), returned in the order asked."""
    found: dict[tuple[int, int], bytes] = {}
    leaf_seqs = [idx for level, idx in indexes if level == 0]
    inner = [(level, idx) for level, idx in indexes if level > 0]
    if leaf_seqs:
        for r in conn.execute(
            select(entries.c.seq, entries.c.leaf_hash).where(entries.c.seq.in_(leaf_seqs))
        ):
            found[(0, r.seq)] = bytes(r.leaf_hash)
    if inner:
        stmt = select(tree_nodes).where(tuple_(tree_nodes.c.level, tree_nodes.c.idx).in_(inner))
        for r in conn.execute(stmt):
            found[(r.level, r.idx)] = bytes(r.hash)
    try:
        return [found[i] for i in indexes]
    except KeyError:
        raise StorageError("a stored tree hash is missing") from None


_ENTRY_RANGE = (
    "SELECT e.seq, e.event_id, e.category, e.event_type, e.occurred_at, e.recorded_at, e.writer,"
    " e.key_id, e.leaf_hash, e.leaf, p.blob, pp.op_seq, pp.reason FROM entries e"
    " LEFT JOIN payloads p ON p.seq = e.seq AND p.seq >= ? AND p.seq < ?"
    " LEFT JOIN payload_purges pp ON pp.seq = e.seq AND pp.seq >= ? AND pp.seq < ?"
    " WHERE e.seq >= ? AND e.seq < ? ORDER BY e.seq"
)


#: PostgreSQL type of each column written by binary COPY or as an array (varchar shares text's
#: binary form).
_COPY_TYPES = {
    (table.name, column.name): (
        "bytea"
        if isinstance(column.type, LargeBinary)
        else "int8"
        if isinstance(column.type, BigInteger)
        else "int4"
        if isinstance(column.type, Integer)
        else "text"
    )
    for table in (entries, entry_refs, payloads, tree_nodes)
    for column in table.columns
}


#: Up to this many rows per append, PostgreSQL writes go out as one statement; above it, COPY.
_ONE_STATEMENT_MAX_ROWS = 400


def _unnest(table: str, columns: Sequence[str]) -> str:
    arrays = ", ".join(f"%s::{_COPY_TYPES[table, column]}[]" for column in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"  # noqa: S608 - fixed identifiers


#: A small append's whole write (PostgreSQL): count the uses of data keys chosen before the
#: transaction (guarded), insert every row, move the head. Data-modifying CTEs all run, once.
#: Answers (keys counted, head rows moved).
_WRITE_STATEMENT = (
    "WITH k AS (UPDATE data_keys d SET uses = d.uses + u.n"  # noqa: S608 - fixed text
    " FROM unnest(%s::text[], %s::int8[]) AS u(key_id, n)"
    " WHERE d.key_id = u.key_id AND d.wrapped IS NOT NULL AND d.uses + u.n <= %s RETURNING 1),"
    f" e AS ({_unnest('entries', ENTRY_ROW)}),"
    f" r AS ({_unnest('entry_refs', ('seq', 'name', 'value'))}),"
    f" p AS ({_unnest('payloads', ('seq', 'blob'))}),"
    f" t AS ({_unnest('tree_nodes', ('level', 'idx', 'hash'))}),"
    " h AS (UPDATE ledger_head SET size = %s, last_leaf_hash = %s, last_recorded_at = %s,"
    " frontier = %s WHERE id = 1 RETURNING 1)"
    " SELECT (SELECT count(*) FROM k), (SELECT count(*) FROM h)"
)
#: Counts uses of a data key chosen before the transaction; no row when it may not take them.
_TAKE_KEY_USES = (
    "UPDATE data_keys SET uses = uses + ? WHERE key_id = ? AND wrapped IS NOT NULL"
    " AND uses + ? <= ?"
)
_SET_HEAD = (
    "UPDATE ledger_head SET size = ?, last_leaf_hash = ?, last_recorded_at = ?, frontier = ?"
    " WHERE id = 1"
)


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608 - fixed identifiers


def _page_entry(row: tuple[Any, ...]) -> StoredEntry:
    """A :data:`_ENTRY_RANGE` row as a :class:`StoredEntry`."""
    (seq, event_id, category, event_type, occurred_at, recorded_at, writer, key_id, leaf_hash,
     leaf, blob, op_seq, reason) = row  # fmt: skip
    return StoredEntry(
        seq, event_id, category, event_type, occurred_at, recorded_at, writer, key_id,
        _bytes(leaf_hash), _bytes(leaf), _bytes(blob) if blob is not None else None, op_seq, reason,
    )  # fmt: skip


def _bytes(value: bytes | memoryview) -> bytes:
    # psycopg's binary protocol and sqlite3 already give bytes: no copy then.
    return value if type(value) is bytes else bytes(value)


def _driver_of(conn: Connection) -> Any:
    """The DBAPI connection under a SQLAlchemy one (psycopg or sqlite3)."""
    driver = conn.connection.driver_connection
    if driver is None:  # pragma: no cover - the pool always hands out a live connection
        raise StorageError("no driver connection")
    return driver


def _raw_exec(conn: Connection, query: str, params: Sequence[Any]) -> int:
    """Execute a fixed statement straight on the driver (``?`` placeholders); the row count."""
    driver = _driver_of(conn)
    if conn.dialect.name == "postgresql":
        with driver.cursor() as cursor:
            cursor.execute(query.replace("?", "%s"), params)
            return int(cursor.rowcount)
    cursor = driver.cursor()
    try:
        cursor.execute(query, params)
        return int(cursor.rowcount)
    finally:
        cursor.close()


def _raw_rows(conn: Connection, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of a fixed query straight from the driver (``?`` placeholders).

    Verification streams the whole log through a few such queries; skipping SQLAlchemy's
    per-row processing, and on PostgreSQL using the binary protocol (bytea as raw bytes instead
    of hex text), makes that stream several times cheaper.
    """
    driver = _driver_of(conn)
    if conn.dialect.name == "postgresql":
        with driver.cursor(binary=True) as cursor:
            cursor.execute(query.replace("?", "%s"), params)
            return list(cursor.fetchall())
    cursor = driver.cursor()
    try:
        return list(cursor.execute(query, params).fetchall())
    finally:
        cursor.close()


def _probe_sql(dialect: str, event_ids: Sequence[str]) -> tuple[str, list[str]]:
    if dialect == "postgresql":
        # One text parameter split by the server: a 1,000-placeholder IN list costs more to
        # build and parse, and even an array parameter is dumped element by element.
        # (Event ids are UUIDs: no commas.)
        return "SELECT event_id FROM entries WHERE event_id = ANY(string_to_array(?, ','))", [
            ",".join(event_ids)
        ]
    marks = ", ".join("?" for _ in event_ids)
    return f"SELECT event_id FROM entries WHERE event_id IN ({marks})", list(event_ids)  # noqa: S608 - marks only


def _present_event_ids(conn: Connection, event_ids: Sequence[str]) -> list[str]:
    """Which of ``event_ids`` are in the log (an index-only probe)."""
    if not event_ids:
        return []
    return [row[0] for row in _raw_rows(conn, *_probe_sql(conn.dialect.name, event_ids))]


def _checkpoint(row: Any) -> StoredCheckpoint:
    return StoredCheckpoint(row.tree_size, bytes(row.root_hash), row.note)


@contextmanager
def translate_errors() -> Iterator[None]:
    """Map driver errors to the storage layer's errors (connectivity vs everything else) —
    through SQLAlchemy or straight from the driver (the append and verify paths)."""
    try:
        yield
    except OperationalError as exc:
        if exc.connection_invalidated or _is_connect_error(str(exc.orig)):
            raise DatabaseUnavailableError("database is unreachable") from exc
        raise StorageError(f"database error: {exc.orig.__class__.__name__}") from exc
    except DBAPIError as exc:
        raise StorageError(f"database error: {exc.orig.__class__.__name__}") from exc
    except (psycopg.Error, sqlite3.Error) as exc:
        operational = isinstance(exc, psycopg.OperationalError | sqlite3.OperationalError)
        if operational and _is_connect_error(str(exc)):
            raise DatabaseUnavailableError("database is unreachable") from exc
        raise StorageError(f"database error: {exc.__class__.__name__}") from exc


class _DropIgnoredDriverErrors(logging.Filter):
    """Drops psycopg's "error ignored …" warnings: the second failure of a failed block.

    When the block of a ``COPY`` or a pipeline raises — typically because the server ended the
    session in the middle (a failover, ``pg_terminate_backend``) — psycopg still tries to end
    the copy or sync the pipeline on the dead connection, fails again, logs *that* failure as
    "error ignored terminating <psycopg.Copy [BAD] …>: the connection is lost", and re-raises
    the first one, which :func:`translate_errors` maps like any other driver error. The warning
    only repeats it in the driver's words; in a process without logging handlers (the CLI)
    Python's last-resort handler printed it raw on stderr, above the one-line error. psycopg
    logs "error ignored" only while another exception is propagating, so nothing is lost.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("error ignored "))


# psycopg logs through this one logger (a filter on a logger sees only its own records).
logging.getLogger("psycopg").addFilter(_DropIgnoredDriverErrors())


def _is_connect_error(message: str) -> bool:
    text = message.lower()
    return any(
        marker in text
        for marker in ("connection", "could not connect", "server closed", "unable to open")
    )


# --- write transaction -------------------------------------------------------------------------


class WriteTx:
    """Operations valid inside :meth:`Store.writer` (head already locked)."""

    def __init__(self, conn: Connection, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect

    # The statements of the append path go straight to the driver: each runs once per
    # transaction, and SQLAlchemy's per-statement overhead was most of their cost.

    def head(self) -> Head:
        return self.head_and_present([])[0]

    def head_and_present(self, event_ids: Sequence[str]) -> tuple[Head, list[str]]:
        """Lock and read the head, then probe which of ``event_ids`` are in the log (exact:
        every writer holds this lock). On PostgreSQL both go out in one round trip."""
        head_sql = (
            "SELECT size, last_leaf_hash, last_recorded_at, frontier FROM ledger_head WHERE id = 1"
        )
        if self.dialect != "postgresql":
            rows = _raw_rows(self.conn, head_sql, ())
            present = _present_event_ids(self.conn, event_ids)
        elif not event_ids:
            rows = _raw_rows(self.conn, head_sql + " FOR UPDATE", ())
            present = []
        else:
            driver = self._driver()
            probe, params = _probe_sql(self.dialect, event_ids)
            with driver.cursor(binary=True) as lock, driver.cursor(binary=True) as find:
                with driver.pipeline():
                    lock.execute(head_sql + " FOR UPDATE")
                    find.execute(probe.replace("?", "%s"), params)
                rows = lock.fetchall()
                present = [row[0] for row in find.fetchall()]
        if not rows:
            raise StorageError("ledger_head row is missing: run 'audit-ledger db upgrade'")
        size, last_leaf_hash, last_recorded_at, frontier = rows[0]
        head = Head(
            size=size,
            last_leaf_hash=bytes(last_leaf_hash) if last_leaf_hash is not None else None,
            last_recorded_at=last_recorded_at,
            frontier=CompactRange.from_bytes(size, bytes(frontier)),
        )
        return head, present

    def entries_by_event_id(self, event_ids: Sequence[str]) -> dict[str, StoredEntry]:
        """Stored entries (with payload state) of ``event_ids`` — the ones
        :meth:`head_and_present` found (the cheap probe comes first: replays are rare)."""
        if not event_ids:
            return {}
        stmt = (
            select(
                *_ENTRY_COLUMNS, payloads.c.blob, payload_purges.c.op_seq, payload_purges.c.reason
            )
            .outerjoin(payloads, payloads.c.seq == entries.c.seq)
            .outerjoin(payload_purges, payload_purges.c.seq == entries.c.seq)
            .where(entries.c.event_id.in_(list(event_ids)))
        )
        return {r.event_id: _entry(r, True) for r in self.conn.execute(stmt)}

    def keys_by_id(self, key_ids: Sequence[str]) -> dict[str, StoredKey]:
        return _keys_by_id(self.conn, key_ids)

    def usable_keys(
        self, category: str, scope_kind: str, scope_values: Sequence[str]
    ) -> list[StoredKey]:
        """Undestroyed keys of the given scopes, newest first (the caller checks use counts)."""
        marks = ", ".join("?" for _ in scope_values)
        rows = _raw_rows(
            self.conn,
            "SELECT key_id, category, scope_kind, scope_value, kek_id, wrapped, uses, created_at"  # noqa: S608 - placeholders only
            " FROM data_keys WHERE category = ? AND scope_kind = ?"
            f" AND scope_value IN ({marks}) AND wrapped IS NOT NULL"
            " ORDER BY created_at DESC, key_id",
            [category, scope_kind, *scope_values],
        )
        return [
            StoredKey(key_id, cat, kind, value, kek_id, bytes(wrapped), uses, created_at)
            for key_id, cat, kind, value, kek_id, wrapped, uses, created_at in rows
        ]

    def insert_key(self, key: StoredKey) -> None:
        self.conn.execute(
            insert(data_keys).values(
                key_id=key.key_id,
                category=key.category,
                scope_kind=key.scope_kind,
                scope_value=key.scope_value,
                kek_id=key.kek_id,
                wrapped=key.wrapped,
                uses=key.uses,
                created_at=key.created_at,
            )
        )

    def add_key_uses(self, uses: Mapping[str, int]) -> None:
        for key_id, count in uses.items():
            _raw_exec(
                self.conn, "UPDATE data_keys SET uses = uses + ? WHERE key_id = ?", (count, key_id)
            )

    def write_entries(
        self, rows: EntryRows, head: Head, uses: Mapping[str, int], max_uses: int
    ) -> bool:
        """Insert a batch's rows (entries, refs, payloads, the subtree hashes they complete),
        move the head to ``head``, and count ``uses`` of data keys chosen before this
        transaction (a key cached by this process, or sealed with ahead of it).

        Returns False when one of those keys was destroyed meanwhile or cannot take that many
        more uses: the caller must then roll back (the rows are written by then). On
        PostgreSQL a small batch (concurrent single appends) goes out as one pipeline — key
        uses, inserts and head in one round trip while the head lock is held; a large one as a
        binary COPY per table.

        Raises:
            DuplicateEntryError: an entry with one of these seqs or event ids exists.
        """
        tables: list[tuple[str, tuple[str, ...], Sequence[tuple[Any, ...]]]] = [
            ("entries", ENTRY_ROW, rows.entries),
            ("entry_refs", ("seq", "name", "value"), rows.refs),
            ("payloads", ("seq", "blob"), rows.payloads),
            ("tree_nodes", ("level", "idx", "hash"), rows.nodes),
        ]
        statements: list[tuple[str, Sequence[Any]]] = [
            (_TAKE_KEY_USES, (n, key_id, n, max_uses)) for key_id, n in uses.items()
        ]
        statements.append(
            (
                _SET_HEAD,
                (head.size, head.last_leaf_hash, head.last_recorded_at, head.frontier.to_bytes()),
            )
        )
        try:
            if self.dialect != "postgresql":
                for name, columns, table_rows in tables:
                    if table_rows:
                        self.conn.exec_driver_sql(_insert_sql(name, columns), table_rows)
                return all(_raw_exec(self.conn, sql, params) == 1 for sql, params in statements)
            if sum(len(table_rows) for _, _, table_rows in tables) <= _ONE_STATEMENT_MAX_ROWS:
                return self._write_in_one_statement(tables, head, uses, max_uses)
            self._copy_rows(tables)
            return all(_raw_exec(self.conn, sql, params) == 1 for sql, params in statements)
        except (IntegrityError, psycopg.IntegrityError, sqlite3.IntegrityError) as exc:
            raise DuplicateEntryError("an entry with this seq or event_id exists") from exc

    def _write_in_one_statement(
        self,
        tables: Sequence[tuple[str, tuple[str, ...], Sequence[tuple[Any, ...]]]],
        head: Head,
        uses: Mapping[str, int],
        max_uses: int,
    ) -> bool:
        # Columns travel as arrays, so the statement text is the same for any batch size:
        # prepared once per connection, one round trip and one driver call per append.
        params: list[Any] = [list(uses), list(uses.values()), max_uses]
        for _, columns, table_rows in tables:
            params.extend(list(column) for column in zip(*table_rows, strict=True))
            if not table_rows:
                params.extend([] for _ in columns)
        params += [head.size, head.last_leaf_hash, head.last_recorded_at, head.frontier.to_bytes()]
        with self._driver().cursor() as cursor:
            row = cursor.execute(_WRITE_STATEMENT, params).fetchone()
        return row is not None and tuple(row) == (len(uses), 1)

    def _driver(self) -> psycopg.Connection[Any]:
        return cast(psycopg.Connection[Any], _driver_of(self.conn))

    def _copy_rows(
        self, tables: Sequence[tuple[str, tuple[str, ...], Sequence[tuple[Any, ...]]]]
    ) -> None:
        with self._driver().cursor() as cursor:
            for name, columns, rows in tables:
                if not rows:
                    continue
                # Binary COPY: bytea goes as raw bytes instead of doubled-up hex text.
                statement = f"COPY {name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
                with cursor.copy(statement) as copy:
                    copy.set_types([_COPY_TYPES[name, column] for column in columns])
                    for row in rows:
                        copy.write_row(row)

    def read_hashes(self, indexes: Sequence[tuple[int, int]]) -> list[bytes]:
        return _read_hashes(self.conn, indexes)

    def checkpoint(self, tree_size: int) -> StoredCheckpoint | None:
        row = self.conn.execute(
            select(checkpoints).where(checkpoints.c.tree_size == tree_size)
        ).one_or_none()
        return _checkpoint(row) if row is not None else None

    def insert_principal(self, principal: StoredPrincipal) -> bool:
        """Insert a principal; False if the name is taken."""
        taken = self.conn.execute(
            select(principals.c.name).where(principals.c.name == principal.name)
        ).first()
        if taken is not None:
            return False
        self.conn.execute(
            insert(principals).values(
                name=principal.name,
                token_hash=principal.token_hash,
                roles=",".join(principal.roles),
                created_at=principal.created_at,
            )
        )
        return True

    def revoke_principal(self, name: str, when: str) -> bool:
        """Mark a principal revoked; False if unknown or already revoked."""
        result = self.conn.execute(
            update(principals)
            .where(principals.c.name == name, principals.c.revoked_at.is_(None))
            .values(revoked_at=when)
        )
        return bool(result.rowcount)

    # -- retention, erasure and legal holds --------------------------------------------------

    def payload_entries(
        self,
        *,
        category: str | None = None,
        recorded_before: str | None = None,
        key_ids: Sequence[str] | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[StoredEntry]:
        """Entries whose payload is still stored, in seq order, by category/age (a page after
        ``after_seq``) or by data key."""
        stmt = select(*_ENTRY_COLUMNS).join(payloads, payloads.c.seq == entries.c.seq)
        if category is not None:
            stmt = stmt.where(entries.c.category == category)
        if recorded_before is not None:
            stmt = stmt.where(entries.c.recorded_at < recorded_before)
        if after_seq is not None:
            stmt = stmt.where(entries.c.seq > after_seq)
        if key_ids is None:
            stmt = stmt.order_by(entries.c.seq)
            if limit is not None:
                stmt = stmt.limit(limit)
            return [_entry(r) for r in self.conn.execute(stmt)]
        out: list[StoredEntry] = []
        for part in _chunks(sorted(set(key_ids))):
            out.extend(_entry(r) for r in self.conn.execute(stmt.where(entries.c.key_id.in_(part))))
        return sorted(out, key=lambda e: e.seq)

    def keys_of(
        self, *, category: str, scope_kind: str, scope_value: str | None = None
    ) -> list[StoredKey]:
        """Undestroyed keys of a category's scope kind (optionally one scope value)."""
        stmt = select(data_keys).where(
            data_keys.c.category == category,
            data_keys.c.scope_kind == scope_kind,
            data_keys.c.wrapped.is_not(None),
        )
        if scope_value is not None:
            stmt = stmt.where(data_keys.c.scope_value == scope_value)
        return [_key(r) for r in self.conn.execute(stmt.order_by(data_keys.c.key_id))]

    def payload_counts(self, category: str) -> dict[str, int]:
        """Stored payloads per data key of ``category`` (keys with none are absent)."""
        rows = self.conn.execute(
            select(entries.c.key_id, func.count())
            .join(payloads, payloads.c.seq == entries.c.seq)
            .where(entries.c.category == category, entries.c.key_id.is_not(None))
            .group_by(entries.c.key_id)
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def purge_payloads(self, seqs: Sequence[int], op_seq: int, reason: str) -> None:
        """Record why each payload goes, then delete it (the guard trigger checks the record)."""
        for part in _chunks(sorted(seqs)):
            self.conn.execute(
                insert(payload_purges),
                [{"seq": seq, "op_seq": op_seq, "reason": reason} for seq in part],
            )
            self.conn.execute(payloads.delete().where(payloads.c.seq.in_(part)))

    def destroy_keys(self, key_ids: Sequence[str], when: str, op_seq: int) -> None:
        for part in _chunks(sorted(set(key_ids))):
            self.conn.execute(
                update(data_keys)
                .where(data_keys.c.key_id.in_(part), data_keys.c.wrapped.is_not(None))
                .values(wrapped=None, destroyed_at=when, destroyed_by_seq=op_seq)
            )

    def lock_keys_to_rewrap(self, kek_id: str, after: str, limit: int) -> list[StoredKey]:
        """Up to ``limit`` undestroyed keys past ``after`` (by id) that are wrapped by another
        KEK than ``kek_id``, locked until commit: an erasure or retention destroying one waits
        for the re-wrap (and then destroys the re-wrapped key), never the other way round."""
        stmt = (
            select(data_keys)
            .where(
                data_keys.c.key_id > after,
                data_keys.c.kek_id != kek_id,
                data_keys.c.wrapped.is_not(None),
            )
            .order_by(data_keys.c.key_id)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            stmt = stmt.with_for_update()  # SQLite: the writer's BEGIN IMMEDIATE locks it all
        return [_key(r) for r in self.conn.execute(stmt)]

    def set_key_wrap(self, key_id: str, kek_id: str, wrapped: bytes) -> None:
        """Store a key re-wrapped by another KEK (the row is locked by the caller)."""
        self.conn.execute(
            update(data_keys)
            .where(data_keys.c.key_id == key_id, data_keys.c.wrapped.is_not(None))
            .values(kek_id=kek_id, wrapped=wrapped)
        )

    def active_holds(self) -> list[StoredHold]:
        rows = self.conn.execute(
            select(legal_holds)
            .where(legal_holds.c.released_seq.is_(None))
            .order_by(legal_holds.c.hold_id)
        )
        return [_hold(r) for r in rows]

    def insert_hold(self, hold: StoredHold) -> None:
        self.conn.execute(
            insert(legal_holds).values(
                hold_id=hold.hold_id,
                scope=hold.scope,
                scope_value=hold.scope_value,
                since=hold.since,
                until=hold.until,
                created_by=hold.created_by,
                created_seq=hold.created_seq,
            )
        )

    def release_hold(self, hold_id: str, by: str, op_seq: int) -> bool:
        result = self.conn.execute(
            update(legal_holds)
            .where(legal_holds.c.hold_id == hold_id, legal_holds.c.released_seq.is_(None))
            .values(released_by=by, released_seq=op_seq)
        )
        return bool(result.rowcount)

    def insert_checkpoint(self, checkpoint: StoredCheckpoint) -> bool:
        """Store a checkpoint unless one for that size exists; True when inserted."""
        exists = self.conn.execute(
            select(checkpoints.c.tree_size).where(checkpoints.c.tree_size == checkpoint.tree_size)
        ).first()
        if exists is not None:
            return False
        self.conn.execute(
            insert(checkpoints).values(
                tree_size=checkpoint.tree_size,
                root_hash=checkpoint.root_hash,
                note=checkpoint.note,
            )
        )
        return True


# --- the store ---------------------------------------------------------------------------------


class Store:
    """Entry point of the storage layer over one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def writer(self) -> Iterator[WriteTx]:
        """One write transaction, head locked first; commits on success, rolls back on error."""
        with translate_errors(), self.engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield WriteTx(conn, self.dialect)

    @contextmanager
    def reader(self) -> Iterator[Connection]:
        with translate_errors(), self.engine.connect() as conn, conn.begin():
            yield conn

    # -- reads --------------------------------------------------------------------------------

    def size(self) -> int:
        with self.reader() as conn:
            return int(conn.execute(select(ledger_head.c.size)).scalar_one())

    def head(self) -> Head:
        with self.reader() as conn:
            return WriteTx(conn, "sqlite").head()  # plain read: no row lock

    def entry(self, seq: int) -> StoredEntry | None:
        with self.reader() as conn:
            row = conn.execute(self._entry_select().where(entries.c.seq == seq)).one_or_none()
            return _entry(row, True) if row is not None else None

    @staticmethod
    def _entry_select(after: int | None = None) -> Any:
        """Entries with their payload and purge record. With ``after``, the joined tables are
        bounded too: otherwise PostgreSQL may merge-join from their first row on every page,
        which makes keyset paging through a long log quadratic."""
        payload_on = payloads.c.seq == entries.c.seq
        purge_on = payload_purges.c.seq == entries.c.seq
        if after is not None:
            payload_on = and_(payload_on, payloads.c.seq > after)
            purge_on = and_(purge_on, payload_purges.c.seq > after)
        return (
            select(
                *_ENTRY_COLUMNS, payloads.c.blob, payload_purges.c.op_seq, payload_purges.c.reason
            )
            .outerjoin(payloads, payload_on)
            .outerjoin(payload_purges, purge_on)
        )

    def scan(self, flt: EntryFilter, after_seq: int | None, limit: int) -> list[StoredEntry]:
        """Entries matching ``flt`` in seq order after ``after_seq`` (keyset pagination)."""
        stmt = self._entry_select(after_seq)
        conditions: list[ColumnElement[bool]] = []
        if flt.categories is not None:
            conditions.append(entries.c.category.in_(sorted(flt.categories)))
        if flt.event_type is not None:
            conditions.append(entries.c.event_type == flt.event_type)
        if flt.since is not None:
            conditions.append(entries.c.occurred_at >= flt.since)
        if flt.until is not None:
            conditions.append(entries.c.occurred_at < flt.until)
        if after_seq is not None:
            conditions.append(entries.c.seq > after_seq)
        for name, value in (flt.refs or {}).items():
            ref = entry_refs.alias(f"ref_{name}")
            stmt = stmt.join(
                ref, and_(ref.c.seq == entries.c.seq, ref.c.name == name, ref.c.value == value)
            )
        stmt = stmt.where(*conditions).order_by(entries.c.seq).limit(limit)
        with self.reader() as conn:
            return [_entry(r, True) for r in conn.execute(stmt)]

    def leaves(self, start: int, end: int) -> list[tuple[int, bytes]]:
        with self.reader() as conn:
            rows = conn.execute(
                select(entries.c.seq, entries.c.leaf)
                .where(entries.c.seq >= start, entries.c.seq < end)
                .order_by(entries.c.seq)
            )
            return [(r.seq, bytes(r.leaf)) for r in rows]

    def read_hashes(self, indexes: Sequence[tuple[int, int]]) -> list[bytes]:
        """The :data:`~audit_ledger.core.merkle.HashReader` over stored hashes."""
        with self.reader() as conn:
            return _read_hashes(conn, indexes)

    def checkpoints(self, *, after_size: int = -1, limit: int = 1000) -> list[StoredCheckpoint]:
        with self.reader() as conn:
            rows = conn.execute(
                select(checkpoints)
                .where(checkpoints.c.tree_size > after_size)
                .order_by(checkpoints.c.tree_size)
                .limit(limit)
            )
            return [_checkpoint(r) for r in rows]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        with self.reader() as conn:
            r = conn.execute(
                select(checkpoints).order_by(checkpoints.c.tree_size.desc()).limit(1)
            ).one_or_none()
            return _checkpoint(r) if r else None

    def keys_by_id(self, key_ids: Sequence[str]) -> dict[str, StoredKey]:
        with self.reader() as conn:
            return _keys_by_id(conn, key_ids)

    def iter_keys(self) -> Iterator[StoredKey]:
        with self.reader() as conn:
            for r in conn.execute(select(data_keys).order_by(data_keys.c.key_id)):
                yield _key(r)

    def kek_ids_in_use(self) -> set[str]:
        """KEKs that still wrap an undestroyed data key."""
        with self.reader() as conn:
            rows = conn.execute(
                select(data_keys.c.kek_id).where(data_keys.c.wrapped.is_not(None)).distinct()
            )
            return {str(r[0]) for r in rows}

    # -- principals ----------------------------------------------------------------------------

    def principal_by_token_hash(self, token_hash: bytes) -> StoredPrincipal | None:
        with self.reader() as conn:
            row = conn.execute(
                select(principals).where(principals.c.token_hash == token_hash)
            ).one_or_none()
            return _principal(row) if row is not None else None

    def principals(self) -> list[StoredPrincipal]:
        with self.reader() as conn:
            rows = conn.execute(select(principals).order_by(principals.c.name))
            return [_principal(r) for r in rows]

    def holds(self) -> list[StoredHold]:
        with self.reader() as conn:
            rows = conn.execute(select(legal_holds).order_by(legal_holds.c.hold_id))
            return [_hold(r) for r in rows]

    # -- streaming for verification ------------------------------------------------------------

    def entries_between(self, lo: int, hi: int) -> list[StoredEntry]:
        """Entries with ``lo <= seq < hi`` and their payload state, in seq order."""
        with self.reader() as conn:
            rows = _raw_rows(conn, _ENTRY_RANGE, (lo, hi) * 3)
        return [_page_entry(row) for row in rows]

    def present_event_ids(self, event_ids: Sequence[str]) -> list[str]:
        """Which of ``event_ids`` are in the log now."""
        with self.reader() as conn:
            return _present_event_ids(conn, event_ids)

    def last_seq(self) -> int | None:
        """The largest stored seq (from the entries themselves, not the head row)."""
        with self.reader() as conn:
            return conn.execute(select(func.max(entries.c.seq))).scalar_one_or_none()

    def first_seq_from(self, seq: int) -> int | None:
        """The smallest stored seq at or after ``seq``, if any."""
        with self.reader() as conn:
            return conn.execute(
                select(func.min(entries.c.seq)).where(entries.c.seq >= seq)
            ).scalar_one_or_none()

    def kinds_of(self, seqs: Sequence[int]) -> dict[int, tuple[str, str]]:
        """``(category, event_type)`` of each given seq that exists."""
        if not seqs:
            return {}
        with self.reader() as conn:
            rows = conn.execute(
                select(entries.c.seq, entries.c.category, entries.c.event_type).where(
                    entries.c.seq.in_(sorted(set(seqs)))
                )
            )
            return {r.seq: (r.category, r.event_type) for r in rows}

    def refs_between(self, lo: int, hi: int) -> dict[int, dict[str, str]]:
        with self.reader() as conn:
            rows = _raw_rows(
                conn, "SELECT seq, name, value FROM entry_refs WHERE seq >= ? AND seq < ?", (lo, hi)
            )
        out: dict[int, dict[str, str]] = {}
        for seq, name, value in rows:
            out.setdefault(seq, {})[name] = value
        return out

    def nodes_completed_between(self, lo: int, hi: int) -> dict[tuple[int, int], bytes]:
        """Stored level>=1 hashes completed by leaves ``lo..hi-1``."""
        ranges = nodes_completed_between(lo, hi)
        if not ranges:
            return {}
        where = " OR ".join("(level = ? AND idx BETWEEN ? AND ?)" for _ in ranges)
        params = [value for triple in ranges for value in triple]
        with self.reader() as conn:
            rows = _raw_rows(conn, f"SELECT level, idx, hash FROM tree_nodes WHERE {where}", params)  # noqa: S608 - fixed text
        return {(level, idx): bytes(h) for level, idx, h in rows}

    def count_rows(self, below: int | None = None) -> dict[str, int]:
        """Row counts of the tables whose size verification cross-checks; with ``below``, only
        the rows of entries ``0..below-1`` (rows of entries appended meanwhile are not counted)."""
        with self.reader() as conn:
            out = {}
            for t in (entries, tree_nodes, payloads, payload_purges, entry_refs):
                stmt = select(func.count()).select_from(t)
                if below is not None:
                    stmt = stmt.where(
                        _completed_by(t) <= below if t is tree_nodes else t.c.seq < below
                    )
                out[t.name] = int(conn.execute(stmt).scalar_one())
            return out

    def purges_by_operation(self, below: int) -> Generator[tuple[int, int, str], None, None]:
        """``(op_seq, seq, category)`` of each purge record of an entry below ``below``, in
        ``(op_seq, seq)`` order (streamed: a long log holds many)."""
        stmt = (
            select(payload_purges.c.op_seq, payload_purges.c.seq, entries.c.category)
            .join(entries, entries.c.seq == payload_purges.c.seq)
            .where(payload_purges.c.seq < below)
            .order_by(payload_purges.c.op_seq, payload_purges.c.seq)
        )
        with self.reader() as conn:
            streamed = conn.execution_options(stream_results=True, yield_per=5000)
            # Closed before the connection, also when the caller stops early (the server-side
            # cursor must not outlive its transaction).
            with streamed.execute(stmt) as result:
                for r in result:
                    yield int(r.op_seq), int(r.seq), str(r.category)

    def destroyed_keys(self) -> list[tuple[int, str, str]]:
        """``(destroyed_by_seq, key_id, category)`` of every destroyed data key."""
        with self.reader() as conn:
            rows = conn.execute(
                select(data_keys.c.destroyed_by_seq, data_keys.c.key_id, data_keys.c.category)
                .where(data_keys.c.wrapped.is_(None), data_keys.c.destroyed_by_seq.is_not(None))
                .order_by(data_keys.c.destroyed_by_seq, data_keys.c.key_id)
            )
            return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    def orphans(self) -> dict[str, int]:
        """Rows that point at no entry (possible only if a superuser bypassed the guards)."""
        with self.reader() as conn:
            out = {}
            for t in (payloads, payload_purges, entry_refs):
                out[t.name] = int(
                    conn.execute(
                        select(func.count())
                        .select_from(t)
                        # NOT EXISTS plans as an anti-join; NOT IN (subquery) degrades to a
                        # quadratic scan in PostgreSQL once the subquery outgrows work_mem.
                        .where(~exists().where(entries.c.seq == t.c.seq))
                    ).scalar_one()
                )
            # A subtree hash belongs to the leaf that completes it.
            out[tree_nodes.name] = int(
                conn.execute(
                    select(func.count())
                    .select_from(tree_nodes)
                    .where(~exists().where(entries.c.seq == _completed_by(tree_nodes) - 1))
                ).scalar_one()
            )
            return out
