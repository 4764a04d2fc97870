"""The append path: seal, chain, grow the tree, commit — one batch, one transaction.

Order inside the transaction (DESIGN §5): lock the head first, then resolve idempotency against
stored entries, reserve data keys, seal each payload, build each header with ``prev`` = the leaf
hash before it, extend the Merkle tree's right edge, insert everything and move the head. Any
error rolls the whole batch back: nothing of a failed batch is ever visible.

``recorded_at`` is the commit clock, clamped so it never decreases along the log even if the
wall clock steps back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from audit_ledger.core.canonical import canonical_json_ascii_keys
from audit_ledger.core.header import ZERO_HASH_HEX, header_dict, parse_leaf
from audit_ledger.core.merkle import leaf_hash
from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.crypto.envelope import DataKey, blob_sha256, payload_aad
from audit_ledger.errors import ConflictError, CryptoError, ExternalKeyMissingError
from audit_ledger.ledger.events import PreparedEvent
from audit_ledger.ledger.keyring import DataKeyRing
from audit_ledger.ledger.principals import check_name
from audit_ledger.policy import Policy
from audit_ledger.storage.repository import NewEntry, Store, StoredEntry, WriteTx


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

    def append(self, events: Sequence[PreparedEvent], writer: str | Sequence[str]) -> list[Receipt]:
        """Append ``events`` atomically; replays return their original receipts.

        ``writer`` names the principal recorded in every header, or one per event (the HTTP
        service commits several requests' events in one transaction).

        Raises:
            ConflictError: an ``event_id`` is already used (in the log or earlier in this batch)
                by different content. Nothing of the batch is written.
        """
        if not events:
            return []
        with self.store.writer() as tx:
            return self.append_locked(tx, events, writer)

    def append_locked(
        self, tx: WriteTx, events: Sequence[PreparedEvent], writer: str | Sequence[str]
    ) -> list[Receipt]:
        """Append inside an open write transaction (so other writes can commit with it)."""
        head = tx.head()
        writers = [writer] * len(events) if isinstance(writer, str) else list(writer)
        if len(writers) != len(events):
            raise ValueError("one writer per event is needed")  # programming error
        for name in set(writers):
            check_name(name)  # the only header member not validated by prepare_event
        existing = tx.entries_by_event_id(sorted({e.event_id for e in events}))
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

        recorded_at = format_timestamp(self.clock())
        if head.last_recorded_at is not None and recorded_at < head.last_recorded_at:
            recorded_at = head.last_recorded_at

        keys = self._reserve_keys(tx, [e for e, _ in fresh], recorded_at)
        frontier = head.frontier.copy()
        prev = head.last_leaf_hash.hex() if head.last_leaf_hash is not None else ZERO_HASH_HEX
        new_entries: list[NewEntry] = []
        nodes: list[tuple[int, int, bytes]] = []
        made: dict[str, Receipt] = {}
        for offset, (event, event_writer) in enumerate(fresh):
            seq = head.size + offset
            key = keys[(event.category, *_scope_value(event, self.policy, recorded_at))]
            blob = key.seal(
                event.data_bytes, payload_aad(event.category, event.event_id, key.key_id)
            )
            # Every member is already validated (prepare_event, the commit clock, generated
            # ids), so the header is encoded straight from its members: building a LeafHeader
            # would validate them all again, which costs more than the encoding. Verification
            # parses every leaf strictly.
            leaf = canonical_json_ascii_keys(
                header_dict(
                    seq=seq,
                    event_id=event.event_id,
                    category=event.category,
                    event_type=event.event_type,
                    occurred_at=event.occurred_at,
                    recorded_at=recorded_at,
                    writer=event_writer,
                    correlation_id=event.correlation_id,
                    refs=event.refs,
                    key_id=key.key_id,
                    payload_sha256=blob_sha256(blob),
                    prev=prev,
                )
            )
            lh = leaf_hash(leaf)
            nodes.extend(frontier.append(lh))
            prev = lh.hex()
            new_entries.append(
                NewEntry(
                    seq,
                    event.event_id,
                    event.category,
                    event.event_type,
                    event.occurred_at,
                    recorded_at,
                    event_writer,
                    key.key_id,
                    lh,
                    leaf,
                    blob,
                    refs=event.refs,
                )
            )
            made[event.event_id] = Receipt(seq, event.event_id, prev, recorded_at)
        if new_entries:
            tx.insert_entries(new_entries, nodes)
            tx.set_head(frontier.size, new_entries[-1].leaf_hash, recorded_at, frontier)

        receipts: list[Receipt] = []
        seen: set[str] = set()
        for event in events:
            if event.event_id in existing:
                receipts.append(_receipt(existing[event.event_id]))
            elif event.event_id in seen:
                original = made[event.event_id]
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
                receipts.append(made[event.event_id])
        return receipts

    def _reserve_keys(
        self, tx: WriteTx, fresh: Sequence[PreparedEvent], recorded_at: str
    ) -> dict[tuple[str, str, str], DataKey]:
        needs: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for event in fresh:
            kind, value = _scope_value(event, self.policy, recorded_at)
            needs[(event.category, kind)][value] += 1
        keys: dict[tuple[str, str, str], DataKey] = {}
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
