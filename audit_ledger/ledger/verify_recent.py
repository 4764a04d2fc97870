"""Incremental verification, every minute: tampering is alerted within minutes, not at the next
hourly full verification (issue #15 item 3; PCI DSS v4.0 10.3.4).

Each run costs O(entries appended since the last verified checkpoint), not O(log):

1. **Anchor.** The last checkpoint an earlier run verified (its size is kept in ``job_runs``
   under :data:`STATE_JOB`) is read again and its signature checked with our key; the tree's
   right edge at that size is rebuilt from the stored subtree hashes (log2 n reads) and must give
   the signed root, and the last entry before it must be the rightmost leaf of that edge. A
   removed or rewritten tail, a deleted checkpoint, or a damaged edge fails here.
2. **New entries.** From the anchor to the head, exactly as the full verification checks them
   (:func:`~audit_ledger.ledger.verify_entries.check_range` and the same replay), with every
   checkpoint signed meanwhile; then the head row must equal the replay.
3. **Sweep.** A window of older entries (:data:`SWEEP_WINDOW` per run, round robin, the cursor
   kept under :data:`SWEEP_JOB`) is checked range by range and proven against the anchor's
   signed root with RFC 9162 inclusion paths, so a rewritten old row is also found within
   ``size / SWEEP_WINDOW`` minutes.

What the full verification alone checks (orphan rows, row counts, every data key, every
retention and erasure record) stays hourly. A failure is not forgotten: the state does not move
past it, so every later run finds it again until it is repaired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from audit_ledger.core.checkpoint import Verifier, verify_checkpoint
from audit_ledger.core.merkle import (
    HASH_SIZE,
    CompactRange,
    inclusion_proof,
    node_hash,
    reference_root,
    root_from_inclusion_proof,
    subtree_indexes,
)
from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.core.verify import ChainVerifier, SegmentVerifier
from audit_ledger.errors import ChainBrokenError, CheckpointError, ProofError, StorageError
from audit_ledger.ledger.verify import (
    _ranges_in_process,
    _Run,
    checkpoints_after,
)
from audit_ledger.ledger.verify_entries import (
    FoundProblemError,
    Problem,
    VerifyReport,
    check_range,
    fail,
)
from audit_ledger.storage import jobs
from audit_ledger.storage.checkpoints import StoredCheckpoint
from audit_ledger.storage.store import Store

#: ``job_runs`` rows holding this job's state in their tick column (as ``checkpoint_signed``
#: holds the last signed size): the last verified checkpoint's size, the sweep cursor.
STATE_JOB = "verify_recent_anchor"
SWEEP_JOB = "verify_recent_sweep"
SWEEP_WINDOW = 16_384


@dataclass
class RecentReport:
    """What one incremental run verified."""

    anchor: int = 0
    size: int = 0
    new_entries: int = 0
    checkpoints: int = 0
    swept: tuple[int, int] = (0, 0)
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class RecentVerification:
    """The minute job's use case: verify what changed since the last verified checkpoint."""

    def __init__(self, store: Store, verifier: Verifier, *, window: int = SWEEP_WINDOW) -> None:
        self.store = store
        self.verifier = verifier
        self.window = window

    def run(self, now: datetime) -> RecentReport:
        runs = jobs.runs(self.store)
        since = runs[STATE_JOB][0] if STATE_JOB in runs else None
        cursor = runs[SWEEP_JOB][0] if SWEEP_JOB in runs else 0
        report = RecentReport()
        try:
            anchor = self._anchor(since)
            run = self._resume(anchor, report)
            self._new_entries(run, report)
            if anchor is not None:
                report.swept = self._sweep(anchor, cursor)
        except FoundProblemError as failed:
            report.problem = failed.problem
            return report  # the state stays before the problem: the next run finds it again
        when = format_timestamp(now)
        last = run.last_checkpoint
        if last is not None:
            jobs.record_run(self.store, STATE_JOB, last, when, "ok")
        if anchor is not None:
            following = report.swept[1] if report.swept[1] < anchor.tree_size else 0
            jobs.record_run(self.store, SWEEP_JOB, following, when, "ok")
        return report

    # --- 1. the anchor ---------------------------------------------------------------------

    def _anchor(self, since: int | None) -> StoredCheckpoint | None:
        """The checkpoint verified last time (None: no run yet, take the latest signed one)."""
        if since is None:
            return self.store.latest_checkpoint()
        page = self.store.checkpoints(after_size=since - 1, limit=1)
        if not page or page[0].tree_size != since:
            raise fail("the last verified checkpoint is gone", checkpoint=since)
        return page[0]

    def _resume(self, anchor: StoredCheckpoint | None, report: RecentReport) -> _Recent:
        run = _Recent(self.store, self.verifier)
        if anchor is None:
            return run  # no checkpoint yet: the log is young, verify it from its start
        m = anchor.tree_size
        root = self._signed_root(anchor)
        try:
            edge = CompactRange.from_reader(m, self.store.read_hashes)
        except (StorageError, ProofError):
            missing = "a stored subtree hash of the tree's right edge is missing"
            raise fail(missing, seq=m - 1) from None
        if edge.root() != root:
            raise fail("stored tree edge does not give the signed root", checkpoint=m)
        last = self.store.entry(m - 1)
        if last is None:
            raise fail("missing entry (the last one the checkpoint covers)", seq=m - 1)
        try:
            header, leaf_hash = SegmentVerifier(m - 1).add(m - 1, last.leaf)
        except ChainBrokenError as exc:
            raise fail(exc.reason, seq=exc.seq) from None
        if self._rightmost(m, leaf_hash) != edge.hashes[-1]:
            raise fail("the last entry is not the one the checkpoint signed", seq=m - 1)
        run.resume(ChainVerifier(edge, leaf_hash, header["recorded_at"]), m)
        report.anchor = m
        return run

    def _signed_root(self, stored: StoredCheckpoint) -> bytes:
        try:
            parsed = verify_checkpoint(stored.note, self.verifier)
        except CheckpointError as exc:
            raise fail(str(exc), checkpoint=stored.tree_size) from None
        if parsed.size != stored.tree_size or parsed.root_hash != stored.root_hash:
            raise fail("stored columns differ from the signed note", checkpoint=stored.tree_size)
        return parsed.root_hash

    def _rightmost(self, m: int, leaf_hash: bytes) -> bytes:
        """Root of the smallest complete subtree of the edge, from its rightmost leaf up: its
        left siblings are stored subtree hashes (RFC 9162 §2.1.3, the audit path's last part)."""
        level = (m & -m).bit_length() - 1  # the edge's smallest subtree has 2**level leaves
        last = m - 1
        siblings = [(j, (last >> j) ^ 1) for j in range(level)]
        try:
            hashes = self.store.read_hashes(siblings) if siblings else []
        except StorageError:
            missing = "a stored subtree hash next to the last entry is missing"
            raise fail(missing, seq=last) from None
        h = leaf_hash
        for sibling in hashes:
            h = node_hash(sibling, h)
        return h

    # --- 2. the new entries ----------------------------------------------------------------

    def _new_entries(self, run: _Recent, report: RecentReport) -> None:
        start = run.chain.size
        run.entries(None)
        head = run.catch_up()  # appends landed meanwhile are verified too
        size = run.chain.size
        expected_last = bytes.fromhex(run.chain.last_leaf_hex) if size else None
        if (
            head.size != size
            or head.frontier.hashes != run.chain.tree.hashes
            or head.last_leaf_hash != expected_last
            or head.last_recorded_at != run.chain.last_recorded_at
        ):
            raise fail("ledger head differs from the replayed log", seq=max(size - 1, 0))
        report.size = size
        report.new_entries = size - start
        report.checkpoints = run.report.checkpoints

    # --- 3. the sweep ----------------------------------------------------------------------

    def _sweep(self, anchor: StoredCheckpoint, cursor: int) -> tuple[int, int]:
        """Check ``[cursor, cursor + window)`` (wrapping at the anchor) against its root."""
        m = anchor.tree_size
        lo = cursor if 0 <= cursor < m else 0
        hi = min(lo + self.window, m)
        outcome = check_range(self.store, lo, hi)
        if outcome.problem is not None:
            raise FoundProblemError(outcome.problem)
        leaves = outcome.leaf_hashes
        if outcome.first_seq != lo or len(leaves) != (hi - lo) * HASH_SIZE:
            raise fail("missing entry (gap)", seq=lo + len(leaves) // HASH_SIZE)
        hashes = [leaves[i : i + HASH_SIZE] for i in range(0, len(leaves), HASH_SIZE)]
        for level, idx in subtree_indexes(lo, hi):
            p = idx << level
            block = hashes[p - lo : p - lo + (1 << level)]
            # The path's first ``level`` steps stay inside the block: take them from the
            # leaves just checked, the rest from the stored hashes.
            inside = [reference_root(block[1 << j : 2 << j]) for j in range(level)]
            try:
                stored = inclusion_proof(p, m, self.store.read_hashes)
                implied = root_from_inclusion_proof(p, m, block[0], inside + stored[level:])
            except (StorageError, ProofError):
                raise fail("a stored hash on an inclusion path is missing", seq=p) from None
            if implied != anchor.root_hash:
                raise fail(
                    f"entries {p}..{p + (1 << level) - 1} are not the ones checkpoint {m} signed",
                    seq=p,
                )
        return lo, hi


class _Recent(_Run):
    """The full verification's replay, resumed at a checkpoint instead of the empty log."""

    def __init__(self, store: Store, verifier: Verifier) -> None:
        super().__init__(store, verifier, 5000, _ranges_in_process(store))
        self.report = VerifyReport()
        self.last_checkpoint: int | None = None

    def resume(self, chain: ChainVerifier, size: int) -> None:
        self.chain = chain
        self.checkpoints = checkpoints_after(self.store, size)
        self.next_checkpoint = next(self.checkpoints, None)
        self.last_checkpoint = size

    def checkpoint(self, stored: StoredCheckpoint) -> None:
        super().checkpoint(stored)
        self.last_checkpoint = stored.tree_size
