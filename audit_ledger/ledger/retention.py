"""Tiered retention and erasure, without ever touching a leaf (DESIGN §3).

Retention (counted from ``recorded_at``; the clock is the ledger's, so nothing can purge early):

* every payload past its category's retention is deleted, payload by payload;
* a ``period`` data key is destroyed (crypto-shredding) once its whole month has expired;
* a ``subject`` data key is destroyed once no payload it encrypts remains;
* permanent categories and ``ledger_operations`` are never touched; held data is skipped.

Erasure destroys one subject's keys in the erasable categories and deletes those payloads;
categories whose policy forbids erasure (financial records kept by law) are refused.

Each run — and each erasure — is one transaction that first appends one ``ledger_operations``
entry describing what it destroys, then records each payload's purge against that entry's seq,
deletes the payloads and destroys the keys. ``verify`` accounts for every missing payload and
destroyed key through those records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from audit_ledger.core.commitments import PURGE_REF, purge_commitment
from audit_ledger.core.timestamps import format_timestamp, parse_timestamp
from audit_ledger.crypto.keys import KeyProvider
from audit_ledger.errors import ConfigError
from audit_ledger.ledger.holds import HoldMatcher
from audit_ledger.ledger.keyring import DataKeyRing
from audit_ledger.ledger.operations import Operations
from audit_ledger.policy import CategoryPolicy, Policy
from audit_ledger.storage.store import WriteTx

RETENTION, ERASURE = "retention", "erasure"


def seq_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Compress sorted seqs into inclusive ``[first, last]`` ranges."""
    ranges: list[list[int]] = []
    for seq in sorted(seqs):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return ranges


@dataclass
class CategoryOutcome:
    """What a run destroys (or would destroy) in one category."""

    purge: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    #: True when the run stopped at its size bound with more expired payloads left.
    more: bool = False
    held: list[int] = field(default_factory=list)
    holds: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, object]:
        return {
            "payloads_purged": len(self.purge),
            "seq_ranges": seq_ranges(self.purge),
            "keys_destroyed": sorted(self.keys),
            "held_skipped": len(self.held),
            "held_seq_ranges": seq_ranges(self.held),
            "holds": sorted(self.holds),
            "more_pending": self.more,
        }


def period_last_instant(period: str) -> datetime:
    """The last microsecond of a ``YYYY-MM`` period, UTC."""
    year, month = int(period[:4]), int(period[5:7])
    nxt = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return nxt - timedelta(microseconds=1)


def expired(category: CategoryPolicy, recorded_at: str, now: datetime) -> bool:
    return category.retention.is_expired(parse_timestamp(recorded_at), now)


def query_bound(category: CategoryPolicy, now: datetime) -> str:
    """An exclusive ``recorded_at`` bound that includes every expired payload; exact expiry is
    then checked entry by entry. N calendar years are at least 365·N days."""
    unit, count = category.retention.unit, category.retention.count
    span = timedelta(days=count) if unit == "d" else timedelta(days=365 * count - 1)
    return format_timestamp(now - span + timedelta(microseconds=1))


#: Most payloads one run purges per category; a larger backlog takes several recorded runs,
#: so no single transaction (or its ledger_operations record) grows without bound.
MAX_PURGE_PER_RUN = 50_000
_PAGE = 5_000


def plan_category(
    tx: WriteTx,
    category: CategoryPolicy,
    now: datetime,
    matcher: HoldMatcher,
    max_purge: int | None = None,
) -> CategoryOutcome:
    """What retention destroys in ``category`` at ``now`` (reads only).

    Entries are scanned in seq order; ``recorded_at`` never decreases along the log, so the
    scan stops at the first entry that has not expired. A key is destroyed only when this run
    purges every payload it still encrypts (and, for a period key, its whole month expired).
    """
    out = CategoryOutcome()
    if category.retention.permanent or category.system:
        return out
    max_purge = MAX_PURGE_PER_RUN if max_purge is None else max_purge
    held_keys: set[str] = set()
    purged_per_key: Counter[str] = Counter()
    # Expired entries lie below one seq (recorded_at never decreases): found once, not per page.
    bound = tx.first_seq_recorded_from(query_bound(category, now))
    after: int | None = None
    scanning = True
    while scanning:
        page = tx.payload_entries(
            category=category.name, before_seq=bound, after_seq=after, limit=_PAGE
        )
        if not page:
            break
        for entry in page:
            if not expired(category, entry.recorded_at, now):
                scanning = False
                break
            if len(out.purge) >= max_purge:
                out.more = True
                scanning = False
                break
            holds = matcher.holding(entry)
            if holds:
                out.held.append(entry.seq)
                out.holds.update(holds)
                if entry.key_id:
                    held_keys.add(entry.key_id)
            else:
                out.purge.append(entry.seq)
                if entry.key_id:
                    purged_per_key[entry.key_id] += 1
        after = page[-1].seq
    stored = tx.payload_counts(category.name)
    for key in tx.keys_of(category=category.name, scope_kind=category.key_scope):
        emptied = stored.get(key.key_id, 0) == purged_per_key[key.key_id]
        if not emptied or key.key_id in held_keys:
            continue
        if category.key_scope == "period" and not category.retention.is_expired(
            period_last_instant(key.scope_value), now
        ):
            continue
        out.keys.append(key.key_id)
    return out


def plan_erasure(
    tx: WriteTx, categories: Sequence[CategoryPolicy], subject: str, matcher: HoldMatcher
) -> dict[str, CategoryOutcome]:
    """What erasing ``subject`` (its blind index) destroys in each erasable category."""
    plan: dict[str, CategoryOutcome] = {}
    for category in categories:
        out = CategoryOutcome()
        keys = tx.keys_of(category=category.name, scope_kind="subject", scope_value=subject)
        held_keys: set[str] = set()
        stored = tx.payload_entries(key_ids=[k.key_id for k in keys]) if keys else []
        for entry in stored:
            holds = matcher.holding(entry)
            if holds and entry.key_id:
                out.holds.update(holds)
                held_keys.add(entry.key_id)
        # A key is destroyed whole or not at all: one held entry keeps its key and siblings.
        out.purge = [e.seq for e in stored if e.key_id not in held_keys]
        out.held = [e.seq for e in stored if e.key_id in held_keys]
        out.keys = [k.key_id for k in keys if k.key_id not in held_keys]
        plan[category.name] = out
    return plan


def purge_rules(policy: Policy) -> list[tuple[str, str | None, bool]]:
    """What the database lets retention and erasure purge (``audit_ledger_purge_rules``), from
    the policy: each non-system category's retention as a PostgreSQL interval (None: never)
    and whether it is erasable. ``ledger_operations`` gets no rule, so nothing purges it."""
    rules: list[tuple[str, str | None, bool]] = []
    for name, category in sorted(policy.categories.items()):
        if category.system:
            continue
        retention = category.retention
        period = None
        if not retention.permanent:
            period = f"{retention.count} {'years' if retention.unit == 'y' else 'days'}"
        rules.append((name, period, category.erasable))
    return rules


def check_purge_rules(tx: WriteTx, policy: Policy) -> None:
    """Refuse to run when the database's purge rules are not the policy's and this role may
    not update them: the owner decides what the database allows (DESIGN §5)."""
    if not tx.sync_purge_rules(purge_rules(policy)):
        raise ConfigError(
            "the database's purge rules differ from the policy: run "
            "'audit-ledger db grants --role ROLE --apply' as the owner role"
        )


def purge_ref(plan: dict[str, CategoryOutcome], reason: str) -> dict[str, str]:
    """The header commitment to everything ``plan`` destroys (checked by the database)."""
    seqs = [s for o in plan.values() for s in o.purge]
    keys = [k for o in plan.values() for k in o.keys]
    return {PURGE_REF: purge_commitment(reason, seqs, keys)}


def apply(
    tx: WriteTx, plan: dict[str, CategoryOutcome], op_seq: int, reason: str, when: str
) -> None:
    """Record and carry out a plan inside the transaction that appended entry ``op_seq``
    (whose header carries :func:`purge_ref` of the same plan)."""
    seqs = [s for o in plan.values() for s in o.purge]
    keys = [k for o in plan.values() for k in o.keys]
    if seqs or keys:
        tx.purge(op_seq, reason, seqs=seqs, key_ids=keys, when=when, destroy_keys=tx.destroy_keys)


@dataclass
class RetentionReport:
    """What a retention run or an erasure destroyed (or, for a dry run, would destroy)."""

    run_at: str
    categories: dict[str, dict[str, object]]
    dry_run: bool
    op_seq: int | None = None
    op_seqs: list[int] = field(default_factory=list)
    kept_by_policy: list[str] = field(default_factory=list)

    @property
    def more_pending(self) -> bool:
        return any(bool(c.get("more_pending")) for c in self.categories.values())

    def absorb(self, later: RetentionReport) -> None:
        """Fold a follow-up run (same call, larger backlog) into this report."""
        self.op_seqs.extend(later.op_seqs)
        for name, outcome in later.categories.items():
            mine = self.categories.setdefault(name, {})
            for key, value in outcome.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    mine[key] = int(mine.get(key, 0)) + value  # type: ignore[call-overload]
                elif isinstance(value, list):
                    mine[key] = [*mine.get(key, []), *value]  # type: ignore[misc]
                else:
                    mine[key] = value

    def to_dict(self) -> dict[str, object]:
        return {
            "run_at": self.run_at,
            "dry_run": self.dry_run,
            "recorded_as_seq": self.op_seq,
            "recorded_as_seqs": self.op_seqs,
            "categories": self.categories,
            "kept_by_policy": self.kept_by_policy,
        }


class Shredder:
    """Forgets destroyed data keys and deletes their key-store files, after the commit."""

    def __init__(self, keyring: DataKeyRing, provider: KeyProvider) -> None:
        self.keyring = keyring
        self.provider = provider

    def destroy(self, key_ids: Sequence[str]) -> None:
        for key_id in key_ids:
            self.keyring.forget(key_id)
            self.provider.destroy_external(key_id)

    def stray_keys(self, tx: WriteTx) -> list[str]:
        """Key-store files without a live row (call under the head lock, when no append is
        half-way: they are left over from a rolled-back append or an interrupted destruction)."""
        stored = self.provider.external_key_ids()
        if not stored:
            return []
        rows = tx.keys_by_id(stored)
        return [k for k in stored if k not in rows or rows[k].wrapped is None]


class RetentionStore(Protocol):
    def writer(self) -> AbstractContextManager[WriteTx]: ...


class Retention:
    """The scheduled retention run (DESIGN §2 tiers), one recorded transaction per run."""

    def __init__(
        self,
        store: RetentionStore,
        policy: Policy,
        operations: Operations,
        shredder: Shredder,
    ) -> None:
        self.store = store
        self.policy = policy
        self.operations = operations
        self.shredder = shredder

    def run(self, *, dry_run: bool = False) -> RetentionReport:
        """Purge expired payloads and destroy expired keys; each transaction is one recorded
        run. A backlog larger than one run's bound is worked off in further runs straight
        away; the report covers them all, with ``op_seqs`` naming each record."""
        report = self._once(dry_run)
        while not dry_run and report.more_pending:
            report.absorb(self._once(False))
        return report

    def _once(self, dry_run: bool) -> RetentionReport:
        now = self.operations.clock()
        when = format_timestamp(now)
        with self.store.writer() as tx:
            tx.head()
            check_purge_rules(tx, self.policy)
            matcher = HoldMatcher(tx.active_holds())
            plan = {
                name: plan_category(tx, category, now, matcher)
                for name, category in sorted(self.policy.categories.items())
                if not category.retention.permanent and not category.system
            }
            report = RetentionReport(when, {k: v.to_dict() for k, v in plan.items()}, dry_run)
            if dry_run:
                return report
            op = self.operations.event(
                "retention_run",
                {"run_at": when, "categories": report.categories},
                purge_ref(plan, RETENTION),
            )
            report.op_seq = self.operations.record_in(tx, op)
            report.op_seqs = [report.op_seq]
            apply(tx, plan, report.op_seq, RETENTION, when)
            stray = self.shredder.stray_keys(tx)
        self.shredder.destroy([k for o in plan.values() for k in o.keys] + stray)
        return report
