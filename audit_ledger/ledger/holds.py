"""Legal holds: while a hold is active, retention and erasure leave what it covers alone.

A hold covers entries by subject (``user_id``, matched through its blind index), by order
(``order_id``), by category, or by an ``occurred_at`` time range. Holds are stored by blind
index, never by raw identifier, and every creation and release is a ``ledger_operations`` entry.
After a release commits, ``on_release`` runs (the composition root passes
:meth:`Erasure.resume <audit_ledger.ledger.erasure.Erasure.resume>`: the erasure requests that
hold alone was blocking run again).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from audit_ledger.core.commitments import HOLD_RELEASE_REF, hold_release_commitment
from audit_ledger.core.header import parse_leaf
from audit_ledger.crypto.blind_index import BlindIndexer
from audit_ledger.errors import NotFoundError
from audit_ledger.ledger.operations import Operations, bad, timestamp_bound
from audit_ledger.observability import metrics
from audit_ledger.policy import Policy
from audit_ledger.storage.entries import StoredEntry
from audit_ledger.storage.holds import StoredHold
from audit_ledger.storage.store import WriteTx

SCOPES = ("subject", "order", "category", "time_range")
#: Header ref name matched by each identifier scope.
REF_OF_SCOPE = {"subject": "user", "order": "order"}


def new_hold_id() -> str:
    return "hold_" + uuid.uuid4().hex[:16]


@dataclass(frozen=True, slots=True)
class HoldMatcher:
    """Tests entries against the active holds (built once per run)."""

    holds: Sequence[StoredHold]

    def holding(self, entry: StoredEntry) -> list[str]:
        """Ids of the holds that cover ``entry``."""
        if not self.holds:
            return []
        refs = parse_leaf(entry.leaf).refs
        out = []
        for hold in self.holds:
            if hold.scope in REF_OF_SCOPE:
                covered = refs.get(REF_OF_SCOPE[hold.scope]) == hold.scope_value
            elif hold.scope == "category":
                covered = entry.category == hold.scope_value
            else:
                covered = (hold.since is None or entry.occurred_at >= hold.since) and (
                    hold.until is None or entry.occurred_at < hold.until
                )
            if covered:
                out.append(hold.hold_id)
        return out


def hold_view(hold: StoredHold) -> dict[str, Any]:
    """A hold as the API shows it."""
    return {
        "hold_id": hold.hold_id,
        "scope": hold.scope,
        "scope_value": hold.scope_value,
        "since": hold.since,
        "until": hold.until,
        "created_by": hold.created_by,
        "created_seq": hold.created_seq,
        "released_seq": hold.released_seq,
    }


class HoldStore(Protocol):
    """What legal holds need of storage."""

    def writer(self) -> AbstractContextManager[WriteTx]: ...

    def holds(self) -> list[StoredHold]: ...


class Holds:
    """Placing, releasing and listing legal holds; each change is recorded in its transaction."""

    def __init__(
        self,
        store: HoldStore,
        policy: Policy,
        indexer: BlindIndexer,
        operations: Operations,
        on_release: Callable[[], object] | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.indexer = indexer
        self.operations = operations
        self.on_release = on_release

    def create(
        self,
        scope: str,
        *,
        value: str | int | None = None,
        since: str | None = None,
        until: str | None = None,
        reason: str | None = None,
        actor: str = "cli",
    ) -> StoredHold:
        """Place a legal hold on a subject, an order, a category or an occurred_at range."""
        if scope not in SCOPES:
            raise bad("scope", f"must be one of {', '.join(SCOPES)}")
        scope_value: str | None = None
        if scope in ("subject", "order"):
            if value is None or isinstance(value, bool) or value == "":
                raise bad("value", "a user_id or order_id is required")
            scope_value = self.indexer.index(REF_OF_SCOPE[scope], value)
        elif scope == "category":
            if not isinstance(value, str):
                raise bad("category", "a category is required")
            self.policy.category(value)
            scope_value = value
        lo, hi = timestamp_bound("since", since), timestamp_bound("until", until)
        if scope == "time_range" and lo is None and hi is None:
            raise bad("since", "a time range needs since and/or until")
        if lo is not None and hi is not None and lo >= hi:
            raise bad("until", "must be after since")
        hold_id = new_hold_id()
        op = self.operations.event(
            "legal_hold_created",
            {
                "hold_id": hold_id,
                "scope": scope,
                "scope_value": scope_value,
                "since": lo,
                "until": hi,
                "reason": reason,
                "actor": actor,
            },
        )
        with self.store.writer() as tx:
            tx.head()
            seq = self.operations.record_in(tx, op)
            hold = StoredHold(hold_id, scope, scope_value, lo, hi, actor, seq)
            tx.insert_hold(hold)
        metrics.LEGAL_HOLDS.labels("placed").inc()
        return hold

    def release(self, hold_id: str, *, reason: str | None = None, actor: str = "cli") -> int:
        """Release an active hold, recording who released it and why (the reason is kept in
        the release's sealed record, never in a log line)."""
        op = self.operations.event(
            "legal_hold_released",
            {"hold_id": hold_id, "actor": actor, "reason": reason},
            {HOLD_RELEASE_REF: hold_release_commitment(hold_id)},
        )
        with self.store.writer() as tx:
            tx.head()
            seq = self.operations.record_in(tx, op)
            if not tx.release_hold(hold_id, actor, seq):
                # The id is not echoed: it is whatever the caller sent (DESIGN §4).
                raise NotFoundError("no active legal hold has that id")
        metrics.LEGAL_HOLDS.labels("released").inc()
        if self.on_release is not None:
            # After the commit, in transactions of its own: what it resumes never holds up or
            # undoes the release (it is best effort; the scheduler retries what it misses).
            self.on_release()
        return seq

    def all(self) -> list[StoredHold]:
        return self.store.holds()
