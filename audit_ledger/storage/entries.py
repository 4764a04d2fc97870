"""The log's entries as stored, and reading them back (records, filters, pages, proofs' hashes).

Tables: ``entries`` (one row per leaf, its header members that queries filter on, the leaf hash
and the verbatim leaf bytes), ``entry_refs`` (blind indexes), ``payloads`` (sealed blobs),
``payload_purges`` (why a payload is gone) and ``tree_nodes`` (stored subtree hashes). The write
path over the same tables is :mod:`audit_ledger.storage.appends`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    bindparam,
    func,
    or_,
    select,
    tuple_,
)

from audit_ledger.core.header import INDEXED_MEMBERS
from audit_ledger.core.merkle import CompactRange
from audit_ledger.errors import StorageError
from audit_ledger.storage.database import (
    Database,
    raw_rows,
)
from audit_ledger.storage.schema import (
    entries,
    entry_refs,
    ledger_head,
    payload_purges,
    payloads,
    tree_nodes,
)


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
    #: ``table.column`` of a stored value of the wrong type (only :func:`page_entry` sets it:
    #: verification reports it as tampering at this entry instead of crashing on it)
    defect: str | None = None


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """Non-identifying filters plus blind-indexed refs; all optional and combined with AND."""

    categories: frozenset[str] | None = None
    event_type: str | None = None
    since: str | None = None  # canonical timestamp, inclusive
    until: str | None = None  # canonical timestamp, exclusive
    refs: Mapping[str, str] | None = None  # ref name -> blind index
    recorded_since: str | None = None  # canonical timestamp, inclusive
    recorded_until: str | None = None  # canonical timestamp, exclusive
    event_id: str | None = None
    #: Descending seq order; the keyset bound is then "before", not "after" (the console).
    newest_first: bool = False
    #: seq bound (exclusive) for the entries of ``bounded`` categories: a paging's log size at
    #: its first page
    below: int | None = None
    bounded: frozenset[str] = frozenset()


#: A time range with at most this many entries is searched through its own index (see
#: :meth:`EntryReads.scan`); a larger one in seq order, where its entries are dense.
SMALL_RANGE = 50_000

ENTRY_COLUMNS = (
    entries.c.seq,
    *(entries.c[member] for member in INDEXED_MEMBERS),
    entries.c.leaf_hash,
    entries.c.leaf,
)


#: Column order of :attr:`EntryRows.entries`.
ENTRY_ROW = tuple(c.name for c in ENTRY_COLUMNS)


def entry_from_row(row: Any, with_payload: bool = False) -> StoredEntry:
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


#: Python type of each :func:`page_entry` column (None allowed where the column is nullable),
#: named as ``table.column``. SQLite stores any value in any column, and a superuser can put
#: one there: a leaf stored as TEXT must be reported as tampering, not crash the verifier.
_PAGE_TYPES: tuple[tuple[str, type, bool], ...] = (
    ("entries.seq", int, False),
    *((f"entries.{m}", str, m == "key_id") for m in INDEXED_MEMBERS),
    ("entries.leaf_hash", bytes, False),
    ("entries.leaf", bytes, False),
    ("payloads.blob", bytes, True),
    ("payload_purges.op_seq", int, True),
    ("payload_purges.reason", str, True),
)


def _bytes_or_same(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


def _malformed(row: tuple[Any, ...]) -> StoredEntry:
    """A row with a value of the wrong type, as an entry that only names its defect."""
    name = next(
        name
        for value, (name, kind, nullable) in zip(row, _PAGE_TYPES, strict=True)
        if not (type(value) is kind or (nullable and value is None))
    )
    seq = row[0] if type(row[0]) is int else -1
    return StoredEntry(seq, "", "", "", "", "", "", None, b"", b"", defect=name)


def page_entry(row: tuple[Any, ...]) -> StoredEntry:
    """A :data:`_ENTRY_RANGE` row as a :class:`StoredEntry` (one whose ``defect`` names a
    value of the wrong type, if any)."""
    (seq, event_id, category, event_type, occurred_at, recorded_at, writer, key_id, leaf_hash,
     leaf, blob, op_seq, reason) = row  # fmt: skip
    if type(leaf) is memoryview or type(leaf_hash) is memoryview or type(blob) is memoryview:
        # psycopg's text protocol; its binary one and sqlite3 give bytes
        leaf_hash, leaf = _bytes_or_same(leaf_hash), _bytes_or_same(leaf)
        blob = _bytes_or_same(blob)
    # One chained test per row (this runs for every entry of the log); _malformed says which.
    if not (
        type(seq) is int and type(event_id) is str and type(category) is str
        and type(event_type) is str and type(occurred_at) is str and type(recorded_at) is str
        and type(writer) is str and (key_id is None or type(key_id) is str)
        and type(leaf_hash) is bytes and type(leaf) is bytes
        and (blob is None or type(blob) is bytes) and (op_seq is None or type(op_seq) is int)
        and (reason is None or type(reason) is str)
    ):  # fmt: skip
        return _malformed((seq, event_id, category, event_type, occurred_at, recorded_at,
                           writer, key_id, leaf_hash, leaf, blob, op_seq, reason))  # fmt: skip
    return StoredEntry(
        seq, event_id, category, event_type, occurred_at, recorded_at, writer, key_id,
        leaf_hash, leaf, blob, op_seq, reason,
    )  # fmt: skip


def read_hashes_on(conn: Connection, indexes: Sequence[tuple[int, int]]) -> list[bytes]:
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


def probe_sql(dialect: str, event_ids: Sequence[str]) -> tuple[str, list[str]]:
    if dialect == "postgresql":
        # One text parameter split by the server: a 1,000-placeholder IN list costs more to
        # build and parse, and even an array parameter is dumped element by element.
        # (Event ids are UUIDs: no commas.)
        return "SELECT event_id FROM entries WHERE event_id = ANY(string_to_array(?, ','))", [
            ",".join(event_ids)
        ]
    marks = ", ".join("?" for _ in event_ids)
    return f"SELECT event_id FROM entries WHERE event_id IN ({marks})", list(event_ids)  # noqa: S608 - marks only


def first_seq_recorded_from(conn: Connection, moment: str) -> int:
    """A seq ``b`` such that the entries recorded at or after ``moment`` are those with seq >= b
    (the log's end when there are none).

    ``recorded_at`` never decreases along the log (DESIGN §3; verification checks it), so a
    range of recording times is a range of seqs, found by a binary search over the primary key:
    O(log n) point reads (24 at 16M entries), and no index on ``recorded_at`` for every append
    to maintain (migration 0006). Each probe reads the first entry at or after a seq, so a gap
    cannot mislead it.
    """
    last = conn.execute(select(func.max(entries.c.seq))).scalar_one_or_none()
    if last is None:
        return 0
    probe = (
        select(entries.c.seq, entries.c.recorded_at)
        .where(entries.c.seq >= bindparam("at"))
        .order_by(entries.c.seq)
        .limit(1)
    )
    low, high = 0, int(last) + 1  # the answer lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        seq, recorded_at = conn.execute(probe, {"at": middle}).one()
        if str(recorded_at) >= moment:
            high = middle  # no entry lies in [middle, seq): the bound may be middle
        else:
            low = int(seq) + 1
    return low


def present_event_ids_on(conn: Connection, event_ids: Sequence[str]) -> list[str]:
    """Which of ``event_ids`` are in the log (an index-only probe)."""
    if not event_ids:
        return []
    return [row[0] for row in raw_rows(conn, *probe_sql(conn.dialect.name, event_ids))]


HEAD_SQL = "SELECT size, last_leaf_hash, last_recorded_at, frontier FROM ledger_head WHERE id = 1"


def head_from_rows(rows: Sequence[tuple[Any, ...]]) -> Head:
    if not rows:
        raise StorageError("ledger_head row is missing: run 'audit-ledger db upgrade'")
    size, last_leaf_hash, last_recorded_at, frontier = rows[0]
    if isinstance(frontier, memoryview):
        frontier = bytes(frontier)
    if isinstance(last_leaf_hash, memoryview):
        last_leaf_hash = bytes(last_leaf_hash)
    if not (
        type(size) is int
        and size >= 0
        and type(frontier) is bytes
        and (last_leaf_hash is None or type(last_leaf_hash) is bytes)
        and (last_recorded_at is None or type(last_recorded_at) is str)
    ):
        # Only a superuser's edit can do this (the columns are typed; SQLite's are not).
        raise StorageError("ledger_head holds a value of the wrong type")
    return Head(
        size=size,
        last_leaf_hash=bytes(last_leaf_hash) if last_leaf_hash is not None else None,
        last_recorded_at=last_recorded_at,
        frontier=CompactRange.from_bytes(size, bytes(frontier)),
    )


class EntryReads(Database):
    """Reading entries, leaves and stored hashes (each call its own read transaction)."""

    def size(self) -> int:
        with self.reader() as conn:
            return int(conn.execute(select(ledger_head.c.size)).scalar_one())

    def head(self) -> Head:
        with self.reader() as conn:
            return head_from_rows(raw_rows(conn, HEAD_SQL, ()))  # no row lock

    def entry(self, seq: int) -> StoredEntry | None:
        with self.reader() as conn:
            row = conn.execute(self._entry_select().where(entries.c.seq == seq)).one_or_none()
            return entry_from_row(row, True) if row is not None else None

    @staticmethod
    def _entry_select(after: int | None = None, newest_first: bool = False) -> Any:
        """Entries with their payload and purge record. With ``after``, the joined tables are
        bounded too: otherwise PostgreSQL may merge-join from their first row on every page,
        which makes keyset paging through a long log quadratic."""
        payload_on = payloads.c.seq == entries.c.seq
        purge_on = payload_purges.c.seq == entries.c.seq
        if after is not None and newest_first:
            payload_on = and_(payload_on, payloads.c.seq < after)
            purge_on = and_(purge_on, payload_purges.c.seq < after)
        elif after is not None:
            payload_on = and_(payload_on, payloads.c.seq > after)
            purge_on = and_(purge_on, payload_purges.c.seq > after)
        return (
            select(
                *ENTRY_COLUMNS, payloads.c.blob, payload_purges.c.op_seq, payload_purges.c.reason
            )
            .outerjoin(payloads, payload_on)
            .outerjoin(payload_purges, purge_on)
        )

    def scan(self, flt: EntryFilter, after_seq: int | None, limit: int) -> list[StoredEntry]:
        """Entries matching ``flt`` in seq order after ``after_seq`` (keyset pagination);
        with ``flt.newest_first``, in reverse order before ``after_seq``."""
        order = entries.c.seq.desc() if flt.newest_first else entries.c.seq
        with self.reader() as conn:
            selected = self._entry_select(after_seq, flt.newest_first)
            stmt, conditions = self._filtered(conn, selected, flt)
            if after_seq is not None:
                bound = entries.c.seq < after_seq if flt.newest_first else entries.c.seq > after_seq
                conditions.append(bound)
            if not flt.refs and self._small_time_range(conn, flt):
                # Walking seq order and filtering finds a day of last month only after every
                # later entry (the planner cannot know times follow seqs; measured 1-2 s at 1M).
                # A small range is cheaper from its own index: pick the page's seqs there
                # (``seq + 0`` keeps the planner off the seq order), then join the rest.
                key = entries.c.seq + 0
                picked = (
                    select(entries.c.seq)
                    .where(*conditions)
                    .order_by(key.desc() if flt.newest_first else key)
                    .limit(limit)
                )
                stmt = stmt.where(entries.c.seq.in_(picked)).order_by(order)
            else:
                stmt = stmt.where(*conditions).order_by(order).limit(limit)
            return [entry_from_row(r, True) for r in conn.execute(stmt)]

    def count(self, flt: EntryFilter, cap: int) -> int:
        """How many entries match ``flt``, counting no further than ``cap`` + 1 (so the cost is
        bounded however many match: over ``cap`` means "more than ``cap``")."""
        with self.reader() as conn:
            stmt, conditions = self._filtered(conn, select(entries.c.seq), flt)
            matches = stmt.where(*conditions).limit(cap + 1).subquery()
            return int(conn.execute(select(func.count()).select_from(matches)).scalar_one())

    @staticmethod
    def _filtered(
        conn: Connection, stmt: Any, flt: EntryFilter
    ) -> tuple[Any, list[ColumnElement[bool]]]:
        """``stmt`` joined to the refs ``flt`` names, and the conditions of its other filters
        (a range of recording times as the range of seqs it is, :func:`first_seq_recorded_from`)."""
        conditions: list[ColumnElement[bool]] = []
        if flt.categories is not None:
            conditions.append(entries.c.category.in_(sorted(flt.categories)))
        if flt.event_type is not None:
            conditions.append(entries.c.event_type == flt.event_type)
        if flt.since is not None:
            conditions.append(entries.c.occurred_at >= flt.since)
        if flt.until is not None:
            conditions.append(entries.c.occurred_at < flt.until)
        if flt.recorded_since is not None:
            conditions.append(entries.c.seq >= first_seq_recorded_from(conn, flt.recorded_since))
        if flt.recorded_until is not None:
            conditions.append(entries.c.seq < first_seq_recorded_from(conn, flt.recorded_until))
        if flt.event_id is not None:
            conditions.append(entries.c.event_id == flt.event_id)
        if flt.below is not None and flt.bounded:
            conditions.append(
                or_(entries.c.category.not_in(sorted(flt.bounded)), entries.c.seq < flt.below)
            )
        for name, value in (flt.refs or {}).items():
            ref = entry_refs.alias(f"ref_{name}")
            stmt = stmt.join(
                ref, and_(ref.c.seq == entries.c.seq, ref.c.name == name, ref.c.value == value)
            )
        return stmt, conditions

    @staticmethod
    def _small_time_range(conn: Connection, flt: EntryFilter) -> bool:
        """Whether ``flt`` has a range of occurrence times over its categories holding at most
        :data:`SMALL_RANGE` entries — counted through the range's index, stopping there, so the
        probe itself stays cheap. (A range of recording times needs no such plan: it is a range
        of seqs, where the walk in seq order starts.)"""
        if flt.categories is None or (flt.since is None and flt.until is None):
            return False
        column, low, high = entries.c.occurred_at, flt.since, flt.until
        bounds: list[ColumnElement[bool]] = [entries.c.category.in_(sorted(flt.categories))]
        if low is not None:
            bounds.append(column >= low)
        if high is not None:
            bounds.append(column < high)
        probe = select(column).where(*bounds).limit(SMALL_RANGE + 1).subquery()
        found = conn.execute(select(func.count()).select_from(probe)).scalar_one()
        return int(found) <= SMALL_RANGE

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
            return read_hashes_on(conn, indexes)

    def present_event_ids(self, event_ids: Sequence[str]) -> list[str]:
        """Which of ``event_ids`` are in the log now."""
        with self.reader() as conn:
            return present_event_ids_on(conn, event_ids)

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
