"""Reading entries back: who may see which category, payload states, decryption, pagination.

One read pipeline (:class:`Reads`): the filters are checked and the identifiers turned into
blind indexes once, the entries are scanned, each leaf is parsed once, payloads are decrypted
where the caller's roles allow, and the read is recorded in the chain (a ``records_read``
operation) before the caller gets the page. The API, the console and the CLI all read here.

Who sees what (DESIGN §4): a category's readers get plaintext; the auditor gets headers of every
category (``payload_state`` says ``withheld`` where a payload exists); any other role asking for
a category it may not read is refused; without a category filter a caller gets what it may see.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from audit_ledger.core.canonical import MAX_SAFE_INTEGER, strict_loads
from audit_ledger.core.header import parse_leaf
from audit_ledger.core.seq_ranges import describe, to_ranges
from audit_ledger.crypto.blind_index import BlindIndexer
from audit_ledger.crypto.envelope import payload_aad
from audit_ledger.errors import (
    CryptoError,
    ExternalKeyMissingError,
    FormatError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from audit_ledger.ledger.identity import Principal
from audit_ledger.ledger.keyring import DataKeyRing
from audit_ledger.ledger.operations import Operations, bad, timestamp_bound
from audit_ledger.ledger.replica import ReadSource
from audit_ledger.policy import LEDGER_OPERATIONS, Policy
from audit_ledger.storage.entries import EntryFilter, StoredEntry
from audit_ledger.storage.keys import StoredKey

PRESENT, WITHHELD, PURGED, ERASED = "present", "withheld", "purged", "erased"
_PURGE_STATE = {"retention": PURGED, "erasure": ERASED}


@dataclass(frozen=True, slots=True)
class EntryView:
    """One entry as a caller may see it."""

    seq: int
    leaf_hash: str
    header: dict[str, Any]
    payload_state: str
    data: dict[str, Any] | None = None
    #: seq of the ledger_operations entry that purged or erased the payload
    state_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq,
            "leaf_hash": self.leaf_hash,
            "header": self.header,
            "payload_state": self.payload_state,
        }
        if self.state_seq is not None:
            out["payload_state_seq"] = self.state_seq
        if self.data is not None:
            out["data"] = self.data
        return out


def encode_cursor(seq: int, bound: int | None = None) -> str:
    """The opaque ``next_cursor``: the last seq returned and the paging's bound (see
    :meth:`Reads._scan`)."""
    text = f"v1:{seq}" if bound is None else f"v2:{seq}:{bound}"
    return base64.urlsafe_b64encode(text.encode()).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int | None]:
    """``(last seq returned, bound)`` of a cursor; a ``v1`` cursor (issued before bounds) has
    no bound."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        version, *numbers = text.split(":")
        # A seq is a header integer (< 2^53); a larger one would overflow the database's
        # BIGINT (or SQLite's INTEGER) parameter and surface as a 500, not as a bad cursor.
        if (
            (version, len(numbers)) not in {("v1", 1), ("v2", 2)}
            or not all(n.isdigit() and int(n) <= MAX_SAFE_INTEGER for n in numbers)
            or (version == "v2" and int(numbers[0]) >= int(numbers[1]))
        ):
            raise ValueError(cursor)  # noqa: TRY301 - folded into the one error below
        return int(numbers[0]), int(numbers[1]) if version == "v2" else None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError(
            "cursor is not a next_cursor from this API",
            [{"field": "cursor", "problem": "invalid cursor"}],
        ) from None


def seqs_text(value: Any) -> str:
    """The seqs a ``records_read`` record names, for a page: ``3-7, 9``. Records written
    before exact seqs (issue #14 item 3) hold a flat ``[first, last]``: shown as a span,
    marked as such."""
    if isinstance(value, list) and all(isinstance(r, list) and len(r) == 2 for r in value):
        return describe(value)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(n, int) for n in value):
        return f"{value[0]}…{value[1]} (first and last only)"
    return ""


def categories_for(policy: Policy, roles: Iterable[str], requested: str | None) -> frozenset[str]:
    """The categories a caller may list, narrowed to ``requested`` if given."""
    roles = frozenset(roles)
    visible = policy.visible_categories(roles)
    if requested is not None:
        if requested not in policy.categories:
            raise ValidationError(
                "unknown category", [{"field": "category", "problem": "unknown category"}]
            )
        if requested not in visible:
            raise PermissionDeniedError("your roles may not read this category")
        return frozenset({requested})
    if not visible:
        raise PermissionDeniedError("your roles may not read any category")
    return frozenset(visible)


class EntryStore(Protocol):
    """What reads need of storage."""

    def scan(self, flt: EntryFilter, after_seq: int | None, limit: int) -> list[StoredEntry]: ...

    def count(self, flt: EntryFilter, cap: int) -> int: ...

    def entry(self, seq: int) -> StoredEntry | None: ...

    def keys_by_id(self, key_ids: Sequence[str]) -> dict[str, StoredKey]: ...

    def size(self) -> int: ...


class EntryReader:
    """Turns stored entries into views for a set of roles, decrypting where allowed."""

    def __init__(self, store: EntryStore, policy: Policy, keyring: DataKeyRing) -> None:
        self.store = store
        self.policy = policy
        self.keyring = keyring

    def views(self, stored: Sequence[StoredEntry], roles: Iterable[str]) -> list[EntryView]:
        roles = frozenset(roles)
        readable = self.policy.readable_categories(roles)
        headers = {e.seq: parse_leaf(e.leaf) for e in stored}
        wanted = {
            h.key_id
            for e in stored
            if (h := headers[e.seq]).key_id and e.payload is not None and h.category in readable
        }
        keys = self.store.keys_by_id(sorted(k for k in wanted if k))
        out = []
        for entry in stored:
            header = headers[entry.seq]
            state, data, state_seq = PRESENT, None, None
            if entry.payload is None:
                if entry.purge_reason is not None:
                    state, state_seq = (
                        _PURGE_STATE.get(entry.purge_reason, PURGED),
                        entry.purge_op_seq,
                    )
                elif header.payload_sha256 is None:
                    state = PRESENT  # the entry commits to no payload
            elif header.category not in readable:
                state = WITHHELD
            else:
                stored_key = keys.get(header.key_id or "")
                if stored_key is None or stored_key.wrapped is None:
                    state = ERASED
                    state_seq = stored_key.destroyed_by_seq if stored_key else None
                else:
                    try:
                        data = self._open(entry, entry.payload, header.category, stored_key)
                    except ExternalKeyMissingError:
                        state = ERASED  # a restored backup after an erasure: key store wins
            out.append(
                EntryView(
                    entry.seq, entry.leaf_hash.hex(), header.to_dict(), state, data, state_seq
                )
            )
        return out

    def _open(
        self, entry: StoredEntry, payload: bytes, category: str, stored_key: StoredKey
    ) -> dict[str, Any]:
        key = self.keyring.unwrap(stored_key)  # ExternalKeyMissingError: caller says "erased"
        try:
            plain = key.open(payload, payload_aad(category, entry.event_id, key.key_id))
            data = strict_loads(plain)
        except (CryptoError, FormatError) as exc:
            raise CryptoError(f"payload of seq {entry.seq} cannot be opened: {exc}") from None
        if not isinstance(data, dict):
            raise CryptoError(f"payload of seq {entry.seq} is not an object")
        return data


@dataclass(frozen=True, slots=True)
class Query:
    """Read filters (non-identifying ones plus identifiers matched through the blind index)."""

    category: str | None = None
    event_type: str | None = None
    since: str | None = None
    until: str | None = None
    user_id: str | int | None = None
    order_id: str | int | None = None
    limit: int = 100
    cursor: str | None = None
    # The console's extra filters (issue #14); the API v1 routes leave them unset.
    recorded_since: str | None = None
    recorded_until: str | None = None
    event_id: str | None = None
    newest_first: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    events: list[EntryView]
    next_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"events": [v.to_dict() for v in self.events], "next_cursor": self.next_cursor}


class Reads:
    """The read use case: scan, decrypt where allowed, shape, record."""

    def __init__(  # noqa: PLR0917 - wired once, by the composition root
        self,
        store: EntryStore,
        policy: Policy,
        keyring: DataKeyRing,
        indexer: BlindIndexer,
        operations: Operations,
        page_limit_max: int,
        source: ReadSource[Any] | None = None,
    ) -> None:
        self.store = store
        # Entries are scanned where ``source`` says (a caught-up read replica, issue #16); keys
        # are always looked up on ``store``, the primary, so a crypto-shredding erasure is
        # honoured from its commit on, not from when a replica has replayed it.
        self.source: ReadSource[Any] = source if source is not None else ReadSource(store)
        self.policy = policy
        self.indexer = indexer
        self.operations = operations
        self.page_limit_max = page_limit_max
        self.reader = EntryReader(store, policy, keyring)

    def query(
        self, principal: Principal, q: Query, endpoint: str, *, below: int | None = None
    ) -> Page:
        """One page of entries ``principal`` may see, recorded as read by ``endpoint``; a
        refusal (a category the roles may not read) is recorded too, then raised. With
        ``below`` (an export's checkpoint size; oldest first only) the page stops at the
        first seq not below it, and is the last."""
        try:
            page, filters = self._scan(principal.roles, q)
        except PermissionDeniedError:
            self.refused(principal, endpoint, q.category)
            raise
        if below is not None and any(v.seq >= below for v in page.events):
            page = Page([v for v in page.events if v.seq < below], None)
        self.record(principal, endpoint, [v.seq for v in page.events], filters=filters)
        return page

    def entry(self, principal: Principal, seq: int, endpoint: str) -> EntryView:
        """One entry by seq, recorded as read (or as refused)."""
        try:
            view = self.view_for(principal.roles, seq)
        except PermissionDeniedError:
            stored = self.store.entry(seq)
            self.refused(principal, endpoint, stored.category if stored else None, seq=seq)
            raise
        self.record(principal, endpoint, [seq])
        return view

    def page_for(self, roles: Iterable[str], q: Query) -> Page:
        """:meth:`query` without the record: for a use case that records its reads itself."""
        return self._scan(frozenset(roles), q)[0]

    def view_for(self, roles: Iterable[str], seq: int) -> EntryView:
        """:meth:`entry` without the record: for a use case that records its reads itself."""
        roles = frozenset(roles)
        # Seqs are header integers (< 2^53): larger ones cannot exist and would overflow the
        # database parameter (a 500) rather than be "not found".
        stored = (
            self.source.run(seq + 1, lambda store: store.entry(seq))
            if 0 <= seq <= MAX_SAFE_INTEGER
            else None
        )
        if stored is None:
            raise NotFoundError(f"no entry with seq {seq}")
        categories_for(self.policy, roles, stored.category)
        return self.reader.views([stored], roles)[0]

    def count_for(self, roles: Iterable[str], q: Query, cap: int) -> int:
        """How many entries the paging of ``q`` would go through, counted no further than
        ``cap`` + 1 (the console's "N records" above its first page; an exact count of millions
        would cost a scan). Not a read of records, so not recorded; the API's page shape has
        no count (DESIGN §4)."""
        flt_of, _ = self._filters(frozenset(roles), q)

        def count(store: EntryStore) -> int:
            return store.count(flt_of(store.size()), cap)

        return self.source.run(0, count)

    def _scan(self, roles: frozenset[str], q: Query) -> tuple[Page, dict[str, Any]]:
        """The page, and the filters as recorded (identifiers as their blind indexes)."""
        flt_of, refs = self._filters(roles, q)
        after, bound = decode_cursor(q.cursor) if q.cursor else (None, None)

        # Each page is itself recorded (a ``records_read`` entry in ledger_operations), so a
        # reader of ledger_operations would meet its previous page's record on every next page
        # and never reach the end (issue #12). So a paging sees ledger_operations as it was at
        # its first page: the log size then is the bound every later page carries in its
        # cursor; operations recorded since belong to the next paging. Other categories still
        # show entries appended during a paging on its following pages (a tail can follow).
        def scan(store: EntryStore) -> tuple[list[StoredEntry], int]:
            # A first page is bounded by the size of the store it is read from: a replica's
            # page is a consistent snapshot of its (shorter) log and claims nothing beyond it.
            below = store.size() if bound is None else bound
            return store.scan(flt_of(below), after, q.limit + 1), below

        return self._page(roles, q, refs, (after, bound), scan)

    def _filters(
        self, roles: frozenset[str], q: Query
    ) -> tuple[Callable[[int], EntryFilter], dict[str, str]]:
        """``q`` checked against ``roles``: its storage filter for a paging bounded at a log
        size, and the blind indexes of its identifiers."""
        categories = categories_for(self.policy, roles, q.category)
        if not 1 <= q.limit <= self.page_limit_max:
            raise bad("limit", f"must be between 1 and {self.page_limit_max}")
        since = timestamp_bound("since", q.since)
        until = timestamp_bound("until", q.until)
        if since is not None and until is not None and since > until:
            raise bad("until", "must not be before since")
        recorded_since = timestamp_bound("recorded_since", q.recorded_since)
        recorded_until = timestamp_bound("recorded_until", q.recorded_until)
        if recorded_since and recorded_until and recorded_since > recorded_until:
            raise bad("recorded_until", "must not be before recorded_since")
        if q.event_id is not None and not (0 < len(q.event_id) <= 36):
            raise bad("event_id", "must be 1-36 characters")
        refs = {}  # blind indexes, computed once: for the scan and for the record
        if q.user_id is not None:
            refs["user"] = self.indexer.index("user", q.user_id)
        if q.order_id is not None:
            refs["order"] = self.indexer.index("order", q.order_id)

        def entry_filter(below: int) -> EntryFilter:
            return EntryFilter(
                frozenset(categories),
                q.event_type,
                since,
                until,
                refs or None,
                recorded_since,
                recorded_until,
                q.event_id,
                q.newest_first,
                below=below,
                bounded=frozenset({LEDGER_OPERATIONS}),
            )

        return entry_filter, refs

    def _page(
        self,
        roles: frozenset[str],
        q: Query,
        refs: dict[str, str],
        cursor: tuple[int | None, int | None],
        scan: Callable[[EntryStore], tuple[list[StoredEntry], int]],
    ) -> tuple[Page, dict[str, Any]]:
        """The page ``scan`` reads (one more than ``q.limit`` tells whether more follow), and
        the filters as recorded (identifiers as their blind indexes). ``cursor``: the seq the
        page continues after and the paging's bound, from the caller's cursor."""
        after, bound = cursor
        # A later page needs what its paging saw (the bound) and the entry it continues after:
        # a replica short of either would end the paging early.
        needed = max(bound or 0, 0 if after is None else after + 1)
        stored, bound = self.source.run(needed, scan)
        more = len(stored) > q.limit
        stored = stored[: q.limit]
        next_cursor = encode_cursor(stored[-1].seq, bound) if more and stored else None
        filters: dict[str, Any] = {
            name: value
            for name, value in (
                ("category", q.category),
                ("event_type", q.event_type),
                ("since", q.since),
                ("until", q.until),
                ("limit", q.limit),
                ("recorded_since", q.recorded_since),
                ("recorded_until", q.recorded_until),
                ("event_id", q.event_id),
                ("newest_first", q.newest_first or None),
            )
            if value is not None
        }
        filters.update({f"{name}_ref": value for name, value in refs.items()})
        return Page(self.reader.views(stored, roles), next_cursor), filters

    def record(
        self,
        principal: Principal,
        endpoint: str,
        seqs: Sequence[int],
        *,
        filters: Mapping[str, Any] | None = None,
    ) -> None:
        """Append the ``records_read`` operation for a read, before the caller sees it: the
        exact seqs read, as sorted inclusive ranges ``[[first, last], ...]``
        (:mod:`audit_ledger.core.seq_ranges`; issue #14 item 3)."""
        what: dict[str, Any] = {"principal": principal.name, "endpoint": endpoint}
        if filters is not None:
            what["filters"] = dict(filters)
        what["count"] = len(seqs)
        what["seqs"] = to_ranges(seqs)
        self.operations.record("records_read", what)

    def refused(
        self, principal: Principal, endpoint: str, category: str | None, *, seq: int | None = None
    ) -> None:
        """Append a ``read_refused`` operation: who asked which endpoint for which category
        (``None``: no category given and none readable). Never the identifiers searched for
        (user or order id): the chain would then hold what the caller may not see."""
        what: dict[str, Any] = {
            "principal": principal.name,
            "endpoint": endpoint,
            "category": category,
        }
        if seq is not None:
            what["seq"] = seq
        self.operations.record("read_refused", what)
