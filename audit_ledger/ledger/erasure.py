"""Erasing one data subject (crypto-shredding), the privacy officer's use case.

The subject's keys in every erasable category (or the ones named) are destroyed and their
payloads deleted, in one transaction that first records the erasure as an operation. Naming a
category whose policy forbids erasure (financial records kept by law) is refused; data under a
legal hold is skipped and reported. Leaves never change, so every proof stays valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.crypto.blind_index import BlindIndexer
from audit_ledger.errors import RefusedError
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
from audit_ledger.policy import Policy
from audit_ledger.storage.store import WriteTx


class ErasureStore(Protocol):
    def writer(self) -> AbstractContextManager[WriteTx]: ...


class Erasure:
    """Erase one subject's erasable data."""

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

    def erase_subject(
        self, user_id: str | int, *, categories: Sequence[str] | None = None, actor: str = "cli"
    ) -> RetentionReport:
        """Erase one data subject: destroy its keys in every erasable category (or the ones
        named) and delete those payloads. Naming a category whose policy forbids erasure is
        refused; held data is skipped and reported."""
        if isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == "":
            raise bad("user_id", "must be a non-empty string or an integer")
        if categories is not None and not categories:
            # An empty list is not "no filter": erasing every erasable category because a
            # client sent [] would destroy more than it asked for (issue #12).
            raise bad("categories", "must name at least one category, or be omitted")
        names = list(categories) if categories is not None else None
        for name in names or []:
            category = self.policy.category(name)
            if not category.erasable:
                raise RefusedError(
                    f"{name} may not be erased: its policy keeps these records "
                    f"({category.retention}) — e.g. financial records kept by law"
                )
        targets = [
            c
            for c in self.policy.categories.values()
            if c.erasable and (names is None or c.name in names)
        ]
        subject = self.indexer.index(SUBJECT_REF, user_id)
        when = format_timestamp(self.operations.clock())
        kept = sorted(
            c.name
            for c in self.policy.categories.values()
            if not c.erasable and not c.system and names is None
        )
        with self.store.writer() as tx:
            tx.head()
            check_purge_rules(tx, self.policy)
            plan = plan_erasure(tx, targets, subject, HoldMatcher(tx.active_holds()))
            report = RetentionReport(when, {k: v.to_dict() for k, v in plan.items()}, False)
            op = self.operations.event(
                "erasure",
                {
                    "run_at": when,
                    "subject_ref": subject,
                    "requested_by": actor,
                    "categories": report.categories,
                    "kept_by_policy": kept,
                },
                purge_ref(plan, ERASURE),
            )
            report.op_seq = self.operations.record_in(tx, op)
            apply(tx, plan, report.op_seq, ERASURE, when)
        self.shredder.destroy([k for o in plan.values() for k in o.keys])
        report.kept_by_policy = kept
        return report
