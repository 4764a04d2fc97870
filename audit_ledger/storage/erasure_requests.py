"""Erasure requests as stored (``erasure_requests``, migration 0005): the work queue around the
erasures the chain records.

A row names its subject by blind index only. Its state changes (``pending`` → ``blocked`` →
``done``), so it is bookkeeping, not evidence: every run it caused is a ``ledger_operations``
entry (``last_op_seq`` names the latest), and the serving role may INSERT and UPDATE it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, insert, select, update

from audit_ledger.storage.database import Database, Transaction
from audit_ledger.storage.schema import erasure_requests


@dataclass(frozen=True, slots=True)
class StoredErasureRequest:
    request_id: str
    subject_ref: str
    #: The categories asked for; None: every erasable one.
    categories: tuple[str, ...] | None
    requested_by: str
    requested_at: str
    state: str
    #: The active holds that kept some of the subject's data at the latest run.
    blocked_by: tuple[str, ...]
    last_op_seq: int | None
    updated_at: str


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(str(n) for n in json.loads(text))


def _request(row: Any) -> StoredErasureRequest:
    return StoredErasureRequest(
        row.request_id,
        row.subject_ref,
        _names(row.categories),
        row.requested_by,
        row.requested_at,
        row.state,
        _names(row.blocked_by) or (),
        row.last_op_seq,
        row.updated_at,
    )


def _listing(
    states: Sequence[str] | None, subject_ref: str | None, newest_first: bool
) -> Select[Any]:
    stmt = select(erasure_requests)
    if states is not None:
        stmt = stmt.where(erasure_requests.c.state.in_(list(states)))
    if subject_ref is not None:
        stmt = stmt.where(erasure_requests.c.subject_ref == subject_ref)
    order = (erasure_requests.c.requested_at, erasure_requests.c.request_id)
    return stmt.order_by(*(c.desc() for c in order) if newest_first else order)


class ErasureRequestReads(Database):
    """Listing erasure requests (each call its own short read transaction)."""

    def erasure_requests(
        self,
        *,
        states: Sequence[str] | None = None,
        subject_ref: str | None = None,
        newest_first: bool = False,
    ) -> list[StoredErasureRequest]:
        with self.reader() as conn:
            return [_request(r) for r in conn.execute(_listing(states, subject_ref, newest_first))]


class ErasureRequestWrites(Transaction):
    """Recording and updating erasure requests inside a write transaction."""

    def insert_erasure_request(self, request: StoredErasureRequest) -> None:
        categories = request.categories
        self.conn.execute(
            insert(erasure_requests).values(
                request_id=request.request_id,
                subject_ref=request.subject_ref,
                categories=None if categories is None else json.dumps(list(categories)),
                requested_by=request.requested_by,
                requested_at=request.requested_at,
                state=request.state,
                blocked_by=json.dumps(list(request.blocked_by)),
                last_op_seq=request.last_op_seq,
                updated_at=request.updated_at,
            )
        )

    def erasure_requests_by_id(self, request_ids: Sequence[str]) -> list[StoredErasureRequest]:
        """The rows of ``request_ids`` as this transaction sees them (under the head lock, the
        state no other runner can change before the commit), oldest request first."""
        rows = self.conn.execute(
            _listing(None, None, False).where(erasure_requests.c.request_id.in_(list(request_ids)))
        )
        return [_request(r) for r in rows]

    def update_erasure_request(
        self,
        request_id: str,
        *,
        state: str,
        blocked_by: Sequence[str],
        last_op_seq: int,
        updated_at: str,
    ) -> None:
        self.conn.execute(
            update(erasure_requests)
            .where(erasure_requests.c.request_id == request_id)
            .values(
                state=state,
                blocked_by=json.dumps(sorted(blocked_by)),
                last_op_seq=last_op_seq,
                updated_at=updated_at,
            )
        )
