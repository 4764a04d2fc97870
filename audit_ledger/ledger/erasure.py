"""Erasing one data subject (crypto-shredding), the privacy officer's use case, as a request
that outlives a legal hold.

The subject's keys in every erasable category (or the ones named) are destroyed and their
payloads deleted, in one transaction that first records the erasure as an operation. Naming a
category whose policy forbids erasure (financial records kept by law) is refused; data under a
legal hold is skipped and reported. Leaves never change, so every proof stays valid.

Every erasure asked for is an ``erasure_requests`` row (by blind index, never the identifier):

* ``pending``: recorded (its own committed transaction) but not run yet. A crash between the two
  leaves it so, and the scheduler's ``erasure_retry`` job runs it later (:meth:`Erasure.retry`).
* ``blocked``: the latest run skipped data an active legal hold covers; ``blocked_by`` names
  those holds. Releasing the last of them runs the erasure again (:meth:`Erasure.resume`,
  called by :class:`~audit_ledger.ledger.holds.Holds` after each release).
* ``done``: the latest run left nothing of it to erase.

Each run updates its requests in the transaction that records and carries out the erasure, so a
request never says ``done`` (or names an operation) that did not commit. Requests of one subject
and the same categories that become runnable together are run by one recorded erasure.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.crypto.blind_index import BlindIndexer
from audit_ledger.errors import AuditLedgerError, RefusedError
from audit_ledger.ledger.appends.prepare import SUBJECT_REF
from audit_ledger.ledger.holds import HoldMatcher
from audit_ledger.ledger.operations import Operations, bad
from audit_ledger.ledger.retention import (
    ERASURE,
    RetentionReport,
    Shredder,
    apply,
    check_purge_rules,
    plan_erasure,
    purge_ref,
)
from audit_ledger.observability import metrics
from audit_ledger.policy import CategoryPolicy, Policy
from audit_ledger.storage.erasure_requests import StoredErasureRequest
from audit_ledger.storage.holds import StoredHold
from audit_ledger.storage.store import WriteTx

PENDING, BLOCKED, DONE = "pending", "blocked", "done"
STATES = (PENDING, BLOCKED, DONE)
#: Why a run happened (recorded in the erasure operation as ``trigger``).
REQUESTED, RETRIED, RELEASED = "request", "retry", "hold_released"
#: A pending request younger than this is left to the call that recorded it (it is running).
RETRY_AFTER = timedelta(seconds=60)

log = logging.getLogger("audit_ledger.application.erasure")


def new_request_id() -> str:
    return "erasure_" + uuid.uuid4().hex[:16]


@dataclass
class ErasureReport(RetentionReport):
    """What one erasure run destroyed, and the state it left its request in."""

    request_id: str = ""
    state: str = PENDING
    blocked_by: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            **super().to_dict(),
            "request_id": self.request_id,
            "state": self.state,
            "blocked_by": self.blocked_by,
        }


def request_view(request: StoredErasureRequest) -> dict[str, object]:
    """An erasure request as the API shows it (the subject by blind index only)."""
    return {
        "request_id": request.request_id,
        "subject_ref": request.subject_ref,
        "categories": None if request.categories is None else list(request.categories),
        "requested_by": request.requested_by,
        "requested_at": request.requested_at,
        "state": request.state,
        "blocked_by": list(request.blocked_by),
        "last_op_seq": request.last_op_seq,
        "updated_at": request.updated_at,
    }


class ErasureStore(Protocol):
    def writer(self) -> AbstractContextManager[WriteTx]: ...

    def erasure_requests(
        self,
        *,
        states: Sequence[str] | None = None,
        subject_ref: str | None = None,
        newest_first: bool = False,
    ) -> list[StoredErasureRequest]: ...

    def holds(self) -> list[StoredHold]: ...


class Erasure:
    """Erase one subject's erasable data; keep, resume and retry the requests."""

    def __init__(
        self,
        store: ErasureStore,
        policy: Policy,
        indexer: BlindIndexer,
        operations: Operations,
        shredder: Shredder,
    ) -> None:
        self.store = store
        self.policy = policy
        self.indexer = indexer
        self.operations = operations
        self.shredder = shredder

    # --- asking ----------------------------------------------------------------------------

    def erase_subject(
        self, user_id: str | int, *, categories: Sequence[str] | None = None, actor: str = "cli"
    ) -> ErasureReport:
        """Record an erasure request for one data subject and run it: destroy its keys in every
        erasable category (or the ones named) and delete those payloads. Naming a category
        whose policy forbids erasure is refused before anything is written; held data is
        skipped and reported, and the request stays ``blocked`` until those holds are
        released."""
        if isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == "":
            raise bad("user_id", "must be a non-empty string or an integer")
        if categories is not None and not categories:
            # An empty list is not "no filter": erasing every erasable category because a
            # client sent [] would destroy more than it asked for (issue #12).
            raise bad("categories", "must name at least one category, or be omitted")
        names = tuple(dict.fromkeys(categories)) if categories is not None else None
        for name in names or ():
            category = self.policy.category(name)
            if not category.erasable:
                raise RefusedError(
                    f"{name} may not be erased: its policy keeps these records "
                    f"({category.retention}) — e.g. financial records kept by law"
                )
        when = format_timestamp(self.operations.clock())
        request = StoredErasureRequest(
            request_id=new_request_id(),
            subject_ref=self.indexer.index(SUBJECT_REF, user_id),
            categories=names,
            requested_by=actor,
            requested_at=when,
            state=PENDING,
            blocked_by=(),
            last_op_seq=None,
            updated_at=when,
        )
        # Committed on its own first: from here on a crash leaves a pending request that the
        # scheduler retries, never an erasure that ran without its request or a lost request.
        with self.store.writer() as tx:
            tx.insert_erasure_request(request)
        report = self._run([request], REQUESTED)
        if report is None:
            # Another runner (the retry job) took it between the two transactions.
            (now,) = self.requests(request_id=request.request_id)
            return ErasureReport(
                now.updated_at,
                {},
                False,
                now.last_op_seq,
                request_id=now.request_id,
                state=now.state,
                blocked_by=list(now.blocked_by),
            )
        return report

    # --- listing ---------------------------------------------------------------------------

    def requests(
        self,
        *,
        state: str | None = None,
        user_id: str | int | None = None,
        request_id: str | None = None,
    ) -> list[StoredErasureRequest]:
        """Erasure requests, newest first: all, those in ``state``, or one subject's."""
        if state is not None and state not in STATES:
            raise bad("state", f"must be one of {', '.join(STATES)}")
        subject = None if user_id is None else self.indexer.index(SUBJECT_REF, user_id)
        found = self.store.erasure_requests(
            states=None if state is None else [state], subject_ref=subject, newest_first=True
        )
        return [r for r in found if request_id is None or r.request_id == request_id]

    # --- resuming and retrying -------------------------------------------------------------

    def resume(self, trigger: str = RELEASED) -> list[ErasureReport]:
        """Run every blocked request none of whose blocking holds is still active (after a
        release). Best effort: a run that fails is logged and left ``blocked`` for
        :meth:`retry`, so that it never undoes or fails the release that called it."""
        try:
            active = {h.hold_id for h in self.store.holds() if h.released_seq is None}
            blocked = self.store.erasure_requests(states=[BLOCKED])
        except AuditLedgerError as exc:
            log.warning("blocked erasure requests not resumed: %s", exc.__class__.__name__)
            return []
        freed = [r for r in blocked if not active.intersection(r.blocked_by)]
        return self._run_groups(freed, trigger)

    def retry(self) -> list[ErasureReport]:
        """The scheduler's pass: run the pending requests recorded at least
        :data:`RETRY_AFTER` ago (left by a crash or a failed run), and the blocked ones whose
        holds were released without resuming them (a crash after the release)."""
        cutoff = format_timestamp(self.operations.clock() - RETRY_AFTER)
        stale = [r for r in self.store.erasure_requests(states=[PENDING]) if r.updated_at <= cutoff]
        return self._run_groups(stale, RETRIED) + self.resume(RELEASED)

    def _run_groups(
        self, requests: Sequence[StoredErasureRequest], trigger: str
    ) -> list[ErasureReport]:
        groups: dict[tuple[str, tuple[str, ...] | None], list[StoredErasureRequest]] = {}
        for request in requests:
            groups.setdefault((request.subject_ref, request.categories), []).append(request)
        reports = []
        for group in groups.values():
            try:
                report = self._run(group, trigger)
            except AuditLedgerError as exc:
                log.warning(
                    "erasure request %s not run (%s): %s, left for the next retry",
                    group[0].request_id,
                    trigger,
                    exc.__class__.__name__,
                )
                continue
            if report is not None:
                reports.append(report)
        return reports

    # --- running ---------------------------------------------------------------------------

    def _targets(self, names: Sequence[str] | None) -> list[CategoryPolicy]:
        # Checked when asked; a policy changed since then only narrows what a rerun touches.
        return [
            c
            for c in self.policy.categories.values()
            if c.erasable and (names is None or c.name in names)
        ]

    def _run(self, requests: Sequence[StoredErasureRequest], trigger: str) -> ErasureReport | None:
        """One recorded erasure for ``requests`` (one subject, same categories), and their new
        state, in one transaction; None when another runner already finished them all."""
        first = requests[0]
        names = first.categories
        kept = sorted(
            c.name
            for c in self.policy.categories.values()
            if not c.erasable and not c.system and names is None
        )
        when = format_timestamp(self.operations.clock())
        with self.store.writer() as tx:
            tx.head()
            # Re-read under the head lock: every runner takes it, so none can finish these
            # between this read and the commit.
            live = [
                r
                for r in tx.erasure_requests_by_id([r.request_id for r in requests])
                if r.state != DONE
            ]
            if not live:
                return None
            check_purge_rules(tx, self.policy)
            plan = plan_erasure(
                tx, self._targets(names), first.subject_ref, HoldMatcher(tx.active_holds())
            )
            blocked_by = sorted({h for o in plan.values() for h in o.holds})
            state = BLOCKED if blocked_by else DONE
            report = ErasureReport(
                when,
                {k: v.to_dict() for k, v in plan.items()},
                False,
                request_id=live[0].request_id,
                state=state,
                blocked_by=blocked_by,
            )
            op = self.operations.event(
                "erasure",
                {
                    "run_at": when,
                    "subject_ref": first.subject_ref,
                    "requested_by": live[0].requested_by,
                    "request_ids": [r.request_id for r in live],
                    "trigger": trigger,
                    "categories": report.categories,
                    "kept_by_policy": kept,
                },
                purge_ref(plan, ERASURE),
            )
            report.op_seq = self.operations.record_in(tx, op)
            apply(tx, plan, report.op_seq, ERASURE, when)
            for request in live:
                tx.update_erasure_request(
                    request.request_id,
                    state=state,
                    blocked_by=blocked_by,
                    last_op_seq=report.op_seq,
                    updated_at=when,
                )
        self.shredder.destroy([k for o in plan.values() for k in o.keys])
        report.kept_by_policy = kept
        outcome = "blocked" if state == BLOCKED else ("resumed" if trigger == RELEASED else "done")
        metrics.ERASURES.labels(outcome).inc()
        return report
