"""Checking entries, range by range: the half of verification that worker processes share.

:func:`check_range` checks one range of entries on its own — each leaf parses and re-encodes to
its stored bytes, its columns agree with its header, its payload matches ``payload_sha256`` or
its absence is accounted for — and reports what the sequential replay needs at the seams
(:mod:`audit_ledger.ledger.verify`). :class:`Problem` and :class:`VerifyReport` are what a
verification reports.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from audit_ledger.core.header import INDEXED_MEMBERS, indexed_values
from audit_ledger.core.verify import SegmentVerifier
from audit_ledger.crypto.envelope import blob_sha256
from audit_ledger.errors import (
    ChainBrokenError,
)
from audit_ledger.policy import LEDGER_OPERATIONS
from audit_ledger.storage.entries import StoredEntry
from audit_ledger.storage.store import Store

#: Purge reason -> event_type of the ledger_operations entry that must record it.
PURGE_OPERATION = {"retention": "retention_run", "erasure": "erasure"}
PURGE_REASONS = frozenset(PURGE_OPERATION)


@dataclass(frozen=True, slots=True)
class Problem:
    """Where verification failed and why."""

    reason: str
    seq: int | None = None
    checkpoint: int | None = None
    key_id: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "checkpoint": self.checkpoint,
            "key_id": self.key_id,
            "reason": self.reason,
        }

    def __str__(self) -> str:
        where = (
            f"seq {self.seq}"
            if self.seq is not None
            else f"checkpoint {self.checkpoint}"
            if self.checkpoint is not None
            else f"data key {self.key_id}"
            if self.key_id is not None
            else "ledger"
        )
        return f"{where}: {self.reason}"


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_ledger`."""

    size: int = 0
    root: str | None = None
    checkpoints: int = 0
    payloads_present: int = 0
    payloads_purged: int = 0
    keys_checked: int = 0
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "size": self.size,
            "root": self.root,
            "checkpoints": self.checkpoints,
            "payloads_present": self.payloads_present,
            "payloads_purged": self.payloads_purged,
            "keys_checked": self.keys_checked,
            "problem": self.problem.to_dict() if self.problem else None,
        }


class FoundProblemError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def fail(
    reason: str, *, seq: int | None = None, checkpoint: int | None = None, key_id: str | None = None
) -> FoundProblemError:
    return FoundProblemError(Problem(reason, seq, checkpoint, key_id))


#: An entry's indexed columns, in :data:`INDEXED_MEMBERS` order (compared with its header's).
_columns = operator.attrgetter(*INDEXED_MEMBERS)


def _check_columns(entry: StoredEntry, header: Mapping[str, Any], leaf_hash: bytes) -> None:
    if entry.leaf_hash != leaf_hash:
        raise fail("stored leaf hash differs from the hash of the leaf", seq=entry.seq)
    if _columns(entry) != indexed_values(header):  # two C-level getters; then name the column
        for name in INDEXED_MEMBERS:
            if getattr(entry, name) != header[name]:
                raise fail(f"stored column {name} differs from the leaf", seq=entry.seq)


@dataclass(slots=True)
class RangeOutcome:
    """What checking the entries with seq in ``[lo, hi)`` on their own found (picklable: it
    comes back from a worker process). The tree, the seams and the checkpoints are left to the
    one process that replays the log in order."""

    lo: int
    #: seq of the first entry found in the range (None: the range is empty)
    first_seq: int | None = None
    first_prev: str | None = None
    first_recorded_at: str | None = None
    last_recorded_at: str | None = None
    #: leaf hashes (32 bytes each, concatenated) of the entries checked before any problem
    leaf_hashes: bytes = b""
    #: stored subtree hashes completed by leaves of the range
    nodes: dict[tuple[int, int], bytes] = field(default_factory=dict)
    payloads_present: int = 0
    payloads_purged: int = 0
    problem: Problem | None = None


def check_range(store: Store, lo: int, hi: int) -> RangeOutcome:
    """Check every entry with seq in ``[lo, hi)`` as far as it can be checked without the
    entries before ``lo``: leaf format and hash, links inside the range, stored columns, refs
    rows and payloads. Stops at the first problem, keeping what was checked before it."""
    batch = store.entries_between(lo, hi)
    out = RangeOutcome(lo, batch[0].seq if batch else None)
    # The other rows are read up to the last entry read, not to ``hi``: entries appended since
    # (with their refs and subtree hashes) belong to a later read.
    end = batch[-1].seq + 1 if batch else lo
    refs = store.refs_between(lo, end)
    # Loaded even when the range has a gap: the entries before the gap still need their subtree
    # hashes, and the gap itself is reported at the missing seq.
    out.nodes = store.nodes_completed_between(lo, end)
    ops = store.kinds_of([e.purge_op_seq for e in batch if e.purge_op_seq])
    segment = SegmentVerifier(lo)
    try:
        for entry in batch:
            if entry.defect is not None:
                # A value of the wrong type (SQLite stores any type in any column).
                seq = entry.seq if entry.seq >= 0 else segment.next_seq
                raise fail(f"stored {entry.defect} holds a value of the wrong type", seq=seq)
            try:
                header, leaf_hash = segment.add(entry.seq, entry.leaf)
            except ChainBrokenError as exc:
                raise fail(exc.reason, seq=exc.seq) from None
            _check_columns(entry, header, leaf_hash)
            if refs.pop(entry.seq, {}) != header["refs"]:
                raise fail("refs rows differ from the header refs", seq=entry.seq)
            if _check_payload(entry, header, ops):
                out.payloads_present += 1
            else:
                out.payloads_purged += header["payload_sha256"] is not None
        if refs:
            raise fail("refs rows without a matching header ref", seq=min(refs))
    except FoundProblemError as failed:
        out.problem = failed.problem
    hashes = segment.leaf_hashes
    if out.problem is not None and out.problem.seq is not None:
        # The entry at fault is not part of the verified prefix, whatever was found about it.
        hashes = hashes[: max(out.problem.seq - lo, 0)]
    out.leaf_hashes = b"".join(hashes)
    out.first_prev, out.first_recorded_at = segment.first_prev, segment.first_recorded_at
    out.last_recorded_at = segment.last_recorded_at
    return out


def _check_payload(
    entry: StoredEntry, header: Mapping[str, Any], ops: dict[int, tuple[str, str]]
) -> bool:
    """Check the entry's payload state; True if its payload is present."""
    digest = header["payload_sha256"]
    if digest is None:
        if entry.payload is not None or entry.purge_op_seq is not None:
            raise fail("payload stored for an entry that commits to none", seq=entry.seq)
        return False
    if entry.payload is not None:
        if entry.purge_op_seq is not None:
            raise fail("payload both present and recorded as purged", seq=entry.seq)
        if blob_sha256(entry.payload) != digest:
            raise fail("payload differs from payload_sha256", seq=entry.seq)
        return True
    if entry.purge_op_seq is None:
        raise fail("payload missing with no retention or erasure record", seq=entry.seq)
    if entry.purge_reason not in PURGE_REASONS:
        raise fail("purge record has an unknown reason", seq=entry.seq)
    # The record must name a later ledger_operations entry of the matching kind (a retention
    # run for "retention", an erasure for "erasure").
    expected = (LEDGER_OPERATIONS, PURGE_OPERATION[entry.purge_reason])
    if entry.purge_op_seq <= entry.seq or ops.get(entry.purge_op_seq) != expected:
        raise fail("purge record does not name a later ledger_operations entry", seq=entry.seq)
    return False
