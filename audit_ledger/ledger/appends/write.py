"""The append path: seal, chain, grow the tree, commit — one batch, one transaction.

Order inside the transaction (DESIGN §5): lock the head first, then resolve idempotency against
stored entries, choose data keys, seal each payload, build each header with ``prev`` = the leaf
hash before it, extend the Merkle tree's right edge, insert everything and move the head. Any
error rolls the whole batch back: nothing of a failed batch is ever visible.

``recorded_at`` is the commit clock, clamped so it never decreases along the log even if the
wall clock steps back.

Round trips made while the head lock is held delay every other writer, so the path keeps them
few: the lock and the event-id probe go out together; the data key last used for a scope is
remembered and its use counted by a guarded update inside the write (a key destroyed or used up
meanwhile makes the append start over, choosing keys in the transaction); on PostgreSQL a small
batch's whole write is one statement. Two callers go further:

* group commit (:meth:`Appender.append_gathered`) locks the head *before* taking the requests
  to append, so those that queued during the wait join the transaction, and skips the probe:
  the unique event_id refuses a replay, and the caller then appends the ordinary way;
* bulk import seals a batch *before* its transaction, on the head the previous batch will
  leave (:meth:`Appender.seal_on`), so that sealing overlaps the previous commit;
  :meth:`Appender.commit_sealed` commits it only if the log is still exactly at that head and
  its event ids and keys still hold, and otherwise writes nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from audit_ledger.core.canonical import canonical_json_ascii_keys
from audit_ledger.core.header import ZERO_HASH_HEX, header_dict, indexed_values, parse_leaf
from audit_ledger.core.merkle import leaf_hash
from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.crypto.envelope import DataKey, blob_sha256, payload_aad
from audit_ledger.errors import (
    ConflictError,
    CryptoError,
    DuplicateEntryError,
    ExternalKeyMissingError,
)
from audit_ledger.ledger.appends.prepare import PreparedEvent
from audit_ledger.ledger.identity import check_name
from audit_ledger.ledger.keyring import DataKeyRing
from audit_ledger.policy import Policy
from audit_ledger.storage.appends import EntryRows
from audit_ledger.storage.entries import Head, StoredEntry
from audit_ledger.storage.store import Store, WriteTx


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the writer gets back: where its event sits in the log."""

    seq: int
    event_id: str
    leaf_hash: str
    recorded_at: str
    #: True when this ``event_id`` was already in the log with the same content.
    replayed: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "event_id": self.event_id,
            "leaf_hash": self.leaf_hash,
            "recorded_at": self.recorded_at,
        }


def _receipt(entry: StoredEntry) -> Receipt:
    return Receipt(entry.seq, entry.event_id, entry.leaf_hash.hex(), entry.recorded_at, True)


#: Data keys by ``(category, scope kind, scope value)``.
KeysByScope = dict[tuple[str, str, str], DataKey]


@dataclass(slots=True)
class SealedBatch:
    """A batch sealed and chained on a predicted head (see :meth:`Appender.seal_on`)."""

    base: Head
    events: list[PreparedEvent]
    rows: EntryRows
    #: seals per data key id, counted when the batch commits
    uses: dict[str, int]
    receipts: list[Receipt]
    #: the head after it
    after: Head


class _StaleBatchError(Exception):
    """A key or head chosen before the transaction no longer holds; it rolls back."""


#: Data keys an appender remembers (subject scopes add one per user). A batch is sealed ahead
#: of its transaction only when every key it needs is remembered, so this must hold the data
#: subjects a busy month touches (measured: 20,000 subjects sent every batch of a mixed import
#: down the slower path at 4,096); a key costs a few hundred bytes.
MAX_CACHED_KEYS = 32768


def _scope_value(event: PreparedEvent, policy: Policy, recorded_at: str) -> tuple[str, str]:
    """``(scope kind, scope value)`` of the data key for this event."""
    category = policy.categories[event.category]
    if category.key_scope == "subject" and event.subject is not None:
        return "subject", event.subject
    return "period", recorded_at[:7]  # "YYYY-MM" of recorded_at, so keys expire by month


class Appender:
    """Appends prepared events; shared by the API, the CLI and the service's own operations."""

    def __init__(
        self,
        store: Store,
        policy: Policy,
        keyring: DataKeyRing,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.policy = policy
        self.keyring = keyring
        self.clock = clock
        # The data key last chosen per scope. Whether it may still be used is checked in the
        # write itself (guarded use count), so a stale entry costs a retry, never a wrong seal.
        # Plain dict operations: atomic under the GIL for the API's threads.
        self._key_cache: KeysByScope = {}

    def append(self, events: Sequence[PreparedEvent], writer: str | Sequence[str]) -> list[Receipt]:
        """Append ``events`` atomically; replays return their original receipts.

        ``writer`` names the principal recorded in every header, or one per event (the HTTP
        service commits several requests' events in one transaction).

        Raises:
            ConflictError: an ``event_id`` is already used (in the log or earlier in this batch)
                by different content. Nothing of the batch is written.
        """
        return self.append_tracked(events, writer)[0]

    def append_tracked(
        self, events: Sequence[PreparedEvent], writer: str | Sequence[str]
    ) -> tuple[list[Receipt], Head | None]:
        """:meth:`append`, plus the head it left (None for an empty batch)."""
        if not events:
            return [], None
        try:
            with self.store.writer() as tx:
                return self._append_locked(tx, events, writer, cached_keys=True)
        except _StaleBatchError:
            # A cached data key was destroyed or used up meanwhile (nothing was committed):
            # once more, choosing keys in the transaction.
            self._key_cache.clear()
            with self.store.writer() as tx:
                return self._append_locked(tx, events, writer, cached_keys=False)

    def append_locked(
        self, tx: WriteTx, events: Sequence[PreparedEvent], writer: str | Sequence[str]
    ) -> list[Receipt]:
        """Append inside an open write transaction (so other writes can commit with it)."""
        return self._append_locked(tx, events, writer, cached_keys=False)[0]

    def _append_locked(
        self,
        tx: WriteTx,
        events: Sequence[PreparedEvent],
        writer: str | Sequence[str],
        *,
        cached_keys: bool,
    ) -> tuple[list[Receipt], Head]:
        head, present = tx.head_and_present(sorted({e.event_id for e in events}))
        existing = tx.entries_by_event_id(present) if present else {}
        return self._append_on(tx, head, existing, events, writer, cached_keys=cached_keys)

    def append_gathered(
        self, take: Callable[[], tuple[Sequence[PreparedEvent], Sequence[str]]]
    ) -> list[Receipt] | None:
        """Group commit: lock the head first, *then* ``take()`` the events to append (with a
        writer each), so requests that queued while this process waited for the lock join the
        transaction. No probe for replays: the unique event_id refuses one at the write.

        Returns None, having written nothing, when that happened or a cached data key could
        not be used: the caller appends the same events with :meth:`append`, which sorts out
        replays, conflicts and keys. Raises :class:`ConflictError` like :meth:`append` for an
        event_id repeated in the group with other content.
        """
        try:
            with self.store.writer() as tx:
                head = tx.head()
                events, writers = take()
                return self._append_on(tx, head, {}, events, writers, cached_keys=True)[0]
        except DuplicateEntryError:
            return None
        except _StaleBatchError:
            self._key_cache.clear()
            return None

    def _append_on(
        self,
        tx: WriteTx,
        head: Head,
        existing: dict[str, StoredEntry],
        events: Sequence[PreparedEvent],
        writer: str | Sequence[str],
        *,
        cached_keys: bool,
    ) -> tuple[list[Receipt], Head]:
        """Append ``events`` after ``head`` (locked); ``existing`` holds those of them that are
        in the log already."""
        writers = [writer] * len(events) if isinstance(writer, str) else list(writer)
        if len(writers) != len(events):
            raise ValueError("one writer per event is needed")  # programming error
        for name in set(writers):
            check_name(name)  # the only header member not validated by prepare_event
        self._check_replays(tx, events, existing)

        # First occurrences that are not in the log yet get new entries, in batch order.
        fresh: list[tuple[PreparedEvent, str]] = []
        first: dict[str, PreparedEvent] = {}
        for index, event in enumerate(events):
            if event.event_id in existing:
                continue
            earlier = first.get(event.event_id)
            if earlier is None:
                first[event.event_id] = event
                fresh.append((event, writers[index]))
            elif not earlier.same_request(event):
                raise ConflictError(
                    "event_id is repeated in the batch with different content", index
                )

        recorded_at = self._recorded_at(head)
        scopes = [self._scope(e, recorded_at) for e, _ in fresh]
        keys = {s: k for s in set(scopes) if (k := self._key_cache.get(s))} if cached_keys else {}
        if len(keys) == len(set(scopes)):
            # Every key is known to this process: counted at the write, with a guard instead
            # of a look-up first (one round trip less while the head lock is held).
            uses = dict(Counter(keys[s].key_id for s in scopes))
        else:
            keys, uses = self._reserve_keys(tx, [e for e, _ in fresh], recorded_at), {}
            self._remember(keys)
        rows, after, made = self._seal(
            head, [(e, w, keys[s]) for (e, w), s in zip(fresh, scopes, strict=True)], recorded_at
        )
        if fresh and not tx.write_entries(rows, after, uses, self.keyring.max_uses):
            raise _StaleBatchError("a cached data key was destroyed or used up")

        by_id = {receipt.event_id: receipt for receipt in made}
        receipts: list[Receipt] = []
        seen: set[str] = set()
        for event in events:
            if event.event_id in existing:
                receipts.append(_receipt(existing[event.event_id]))
            elif event.event_id in seen:
                original = by_id[event.event_id]
                receipts.append(
                    Receipt(
                        original.seq,
                        original.event_id,
                        original.leaf_hash,
                        original.recorded_at,
                        True,
                    )
                )
            else:
                seen.add(event.event_id)
                receipts.append(by_id[event.event_id])
        return receipts, after

    # -- sealing ahead of the transaction (bulk import) -----------------------------------------

    def seal_on(
        self, head: Head, events: Sequence[PreparedEvent], writer: str
    ) -> SealedBatch | None:
        """Seal and chain ``events`` as the entries right after ``head``, with data keys this
        process already knows; None when that cannot be done up front (a repeated event id or
        a data-key scope without a known key), so the ordinary path must take them.
        ``writer`` is checked by the caller, who should also check that the events are not in
        the log yet (such a batch is refused at commit, after the work)."""
        if not events or len({e.event_id for e in events}) != len(events):
            return None
        recorded_at = self._recorded_at(head)
        sealing: list[tuple[PreparedEvent, str, DataKey]] = []
        for event in events:
            key = self._key_cache.get(self._scope(event, recorded_at))
            if key is None:
                return None
            sealing.append((event, writer, key))
        rows, after, receipts = self._seal(head, sealing, recorded_at)
        uses = Counter(key.key_id for _, _, key in sealing)
        return SealedBatch(head, list(events), rows, dict(uses), receipts, after)

    def commit_sealed(self, batch: SealedBatch) -> bool:
        """Commit a sealed batch if its prediction still holds; False (nothing written) if not."""
        try:
            with self.store.writer() as tx:
                self._write_sealed(tx, batch)
        except _StaleBatchError:
            return False
        return True

    def _write_sealed(self, tx: WriteTx, batch: SealedBatch) -> None:
        head = tx.head()
        if (head.size, head.last_leaf_hash) != (batch.base.size, batch.base.last_leaf_hash):
            raise _StaleBatchError("another writer appended since the batch was sealed")
        try:
            written = tx.write_entries(batch.rows, batch.after, batch.uses, self.keyring.max_uses)
        except DuplicateEntryError:
            # An event id is in the log already (the caller probed before sealing, but another
            # writer may have added it since): the ordinary path returns its receipt.
            raise _StaleBatchError("replayed event id") from None
        if not written:
            self._key_cache.clear()  # the ordinary path chooses keys again
            raise _StaleBatchError("a data key was destroyed or used up")

    # -- shared steps ---------------------------------------------------------------------------

    def _recorded_at(self, head: Head) -> str:
        recorded_at = format_timestamp(self.clock())
        if head.last_recorded_at is not None and recorded_at < head.last_recorded_at:
            return head.last_recorded_at
        return recorded_at

    def _scope(self, event: PreparedEvent, recorded_at: str) -> tuple[str, str, str]:
        return (event.category, *_scope_value(event, self.policy, recorded_at))

    @staticmethod
    def _seal(
        head: Head,
        sealing: Sequence[tuple[PreparedEvent, str, DataKey]],
        recorded_at: str,
    ) -> tuple[EntryRows, Head, list[Receipt]]:
        """Seal each payload and chain the headers after ``head``: the rows to insert, the head
        they leave, a receipt per event."""
        frontier = head.frontier.copy()
        prev = head.last_leaf_hash.hex() if head.last_leaf_hash is not None else ZERO_HASH_HEX
        last_hash = head.last_leaf_hash
        rows = EntryRows()
        receipts: list[Receipt] = []
        for offset, (event, writer, key) in enumerate(sealing):
            seq = head.size + offset
            blob = key.seal(
                event.data_bytes, payload_aad(event.category, event.event_id, key.key_id)
            )
            # Every member is already validated (prepare_event, the commit clock, generated
            # ids), so the header is encoded straight from its members: building a LeafHeader
            # would validate them all again, which costs more than the encoding. Verification
            # parses every leaf strictly.
            header = header_dict(
                seq=seq,
                event_id=event.event_id,
                category=event.category,
                event_type=event.event_type,
                occurred_at=event.occurred_at,
                recorded_at=recorded_at,
                writer=writer,
                correlation_id=event.correlation_id,
                refs=event.refs,
                key_id=key.key_id,
                payload_sha256=blob_sha256(blob),
                prev=prev,
            )
            leaf = canonical_json_ascii_keys(header)
            last_hash = leaf_hash(leaf)
            rows.nodes.extend(frontier.append(last_hash)[1:])  # [0] is the leaf itself
            prev = last_hash.hex()
            # The columns come from the header itself (ENTRY_ROW order), never restated.
            rows.entries.append((seq, *indexed_values(header), last_hash, leaf))
            rows.refs.extend([(seq, name, value) for name, value in event.refs.items()])
            rows.payloads.append((seq, blob))
            receipts.append(Receipt(seq, event.event_id, prev, recorded_at))
        if not sealing:
            return rows, head, receipts
        after = Head(frontier.size, last_hash, recorded_at, frontier)
        return rows, after, receipts

    def _remember(self, keys: KeysByScope) -> None:
        if len(self._key_cache) + len(keys) > MAX_CACHED_KEYS:
            self._key_cache.clear()  # many subject keys: start over rather than grow
        self._key_cache.update(keys)

    def _reserve_keys(
        self, tx: WriteTx, fresh: Sequence[PreparedEvent], recorded_at: str
    ) -> KeysByScope:
        needs: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for event in fresh:
            kind, value = _scope_value(event, self.policy, recorded_at)
            needs[(event.category, kind)][value] += 1
        keys: KeysByScope = {}
        for (category, kind), per_value in sorted(needs.items()):
            chosen = self.keyring.reserve(tx, category, kind, per_value, recorded_at)
            for value, key in chosen.items():
                keys[(category, kind, value)] = key
        return keys

    def _check_replays(
        self, tx: WriteTx, events: Sequence[PreparedEvent], existing: dict[str, StoredEntry]
    ) -> None:
        """Same ``event_id`` must mean the same request, or the whole batch is a conflict."""
        if not existing:
            return
        stored_keys = tx.keys_by_id(
            [k for e in existing.values() if (k := parse_leaf(e.leaf).key_id) is not None]
        )
        for index, event in enumerate(events):
            entry = existing.get(event.event_id)
            if entry is None:
                continue
            header = parse_leaf(entry.leaf)
            same = (
                header.category == event.category
                and header.event_type == event.event_type
                and header.occurred_at == event.occurred_at
                and header.correlation_id == event.correlation_id
                and dict(header.refs) == dict(event.refs)
            )
            stored_key = stored_keys.get(header.key_id) if header.key_id else None
            if same and entry.payload is not None and stored_key and stored_key.wrapped:
                # Compare the data itself; after retention or erasure only the header can be.
                try:
                    key = self.keyring.unwrap(stored_key)
                    aad = payload_aad(header.category, header.event_id, key.key_id)
                    same = key.open(entry.payload, aad) == event.data_bytes
                except ExternalKeyMissingError:
                    pass  # erased: as after a destruction, only the header can be compared
                except CryptoError:
                    same = False
            if not same:
                raise ConflictError("event_id already used with different content", index)
