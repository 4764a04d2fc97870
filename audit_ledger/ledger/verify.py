"""Full verification of a stored ledger, streaming in seq order with constant memory.

Checks, in one pass: every leaf parses and re-encodes to its stored bytes; seq is contiguous from
0; ``prev`` links; ``recorded_at`` never decreases; the indexed columns and refs rows equal the
header; each stored leaf hash and each stored subtree hash equals the recomputed one; every
present payload matches ``payload_sha256``; every missing payload is accounted for by a purge
record naming a later ``ledger_operations`` entry; every stored checkpoint is signed by our key
and its root equals the root recomputed at its size; the head row matches the replay; no rows
are orphaned; every destroyed data key names the entry that recorded its destruction. With the
keys, also: every live data key unwraps, and every purge and key destruction is one that its
retention run or erasure lists in its own sealed record, under the same category.

The first problem found is reported with the seq (or checkpoint size, or key id) and the reason.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from audit_ledger.core.checkpoint import Verifier, verify_checkpoint
from audit_ledger.core.merkle import HASH_SIZE
from audit_ledger.core.verify import ChainVerifier, SegmentVerifier
from audit_ledger.crypto.envelope import blob_sha256, payload_aad
from audit_ledger.crypto.keys import KeyProvider
from audit_ledger.errors import (
    ChainBrokenError,
    CheckpointError,
    CryptoError,
    DatabaseUnavailableError,
    ProofError,
    StorageError,
)
from audit_ledger.policy import LEDGER_OPERATIONS
from audit_ledger.storage.checkpoints import StoredCheckpoint
from audit_ledger.storage.entries import Head, StoredEntry
from audit_ledger.storage.store import Store

if TYPE_CHECKING:
    from audit_ledger.ledger.workers import WorkerPool

#: Purge reason -> event_type of the ledger_operations entry that must record it.
PURGE_OPERATION = {"retention": "retention_run", "erasure": "erasure"}
PURGE_REASONS = frozenset(PURGE_OPERATION)
#: How often verification follows entries appended while it ran before it settles on a size.
CATCH_UP_ROUNDS = 10


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


class _FoundProblemError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _fail(
    reason: str, *, seq: int | None = None, checkpoint: int | None = None, key_id: str | None = None
) -> _FoundProblemError:
    return _FoundProblemError(Problem(reason, seq, checkpoint, key_id))


def _checkpoints(store: Store) -> Iterator[StoredCheckpoint]:
    after = -1
    while True:
        page = store.checkpoints(after_size=after, limit=1000)
        if not page:
            return
        yield from page
        after = page[-1].tree_size


_COLUMNS = ("event_id", "category", "event_type", "occurred_at", "recorded_at", "writer", "key_id")


def _check_columns(entry: StoredEntry, header: Mapping[str, Any], leaf_hash: bytes) -> None:
    if entry.leaf_hash != leaf_hash:
        raise _fail("stored leaf hash differs from the hash of the leaf", seq=entry.seq)
    if (
        entry.event_id != header["event_id"]
        or entry.category != header["category"]
        or entry.event_type != header["event_type"]
        or entry.occurred_at != header["occurred_at"]
        or entry.recorded_at != header["recorded_at"]
        or entry.writer != header["writer"]
        or entry.key_id != header["key_id"]
    ):  # one expression for the common case; then find which column to name
        for name in _COLUMNS:
            if getattr(entry, name) != header[name]:
                raise _fail(f"stored column {name} differs from the leaf", seq=entry.seq)


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
            try:
                header, leaf_hash = segment.add(entry.seq, entry.leaf)
            except ChainBrokenError as exc:
                raise _fail(exc.reason, seq=exc.seq) from None
            _check_columns(entry, header, leaf_hash)
            if refs.pop(entry.seq, {}) != header["refs"]:
                raise _fail("refs rows differ from the header refs", seq=entry.seq)
            if _check_payload(entry, header, ops):
                out.payloads_present += 1
            else:
                out.payloads_purged += header["payload_sha256"] is not None
        if refs:
            raise _fail("refs rows without a matching header ref", seq=min(refs))
    except _FoundProblemError as failed:
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
            raise _fail("payload stored for an entry that commits to none", seq=entry.seq)
        return False
    if entry.payload is not None:
        if entry.purge_op_seq is not None:
            raise _fail("payload both present and recorded as purged", seq=entry.seq)
        if blob_sha256(entry.payload) != digest:
            raise _fail("payload differs from payload_sha256", seq=entry.seq)
        return True
    if entry.purge_op_seq is None:
        raise _fail("payload missing with no retention or erasure record", seq=entry.seq)
    if entry.purge_reason not in PURGE_REASONS:
        raise _fail("purge record has an unknown reason", seq=entry.seq)
    # The record must name a later ledger_operations entry of the matching kind (a retention
    # run for "retention", an erasure for "erasure").
    expected = (LEDGER_OPERATIONS, PURGE_OPERATION[entry.purge_reason])
    if entry.purge_op_seq <= entry.seq or ops.get(entry.purge_op_seq) != expected:
        raise _fail("purge record does not name a later ledger_operations entry", seq=entry.seq)
    return False


class _Run:
    def __init__(self, store: Store, verifier: Verifier, chunk: int, ranges: RangeChecker) -> None:
        self.store = store
        self.verifier = verifier
        self.chunk = chunk
        self.ranges = ranges
        self.chain = ChainVerifier()
        self.report = VerifyReport()
        self.checkpoints = _checkpoints(store)
        self.next_checkpoint = next(self.checkpoints, None)
        self.progress: Callable[[int], None] | None = None

    def entries(self, progress: Callable[[int], None] | None) -> None:
        """Verify the entries after those already verified, up to the current end of the log."""
        self.progress = progress
        while self._read_on(progress):
            pass

    def _read_on(self, progress: Callable[[int], None] | None) -> bool:
        """Join ranges from the current size; True if entries appended meanwhile need
        another pass."""
        for outcome in self.ranges(self.chain.size, self.chunk):
            if outcome.first_seq is None or outcome.lo != self.chain.size:
                # The log ended (this range is empty, or the one before ended early) — unless
                # entries were appended since those ranges were read, or some are missing.
                following = self.store.first_seq_from(self.chain.size)
                if following is None:
                    return False
                if following != self.chain.size:
                    raise _fail(f"missing entry (gap): got {following}", seq=self.chain.size)
                return True
            self.join(outcome)
            if progress is not None:
                progress(self.chain.size)
        return False  # pragma: no cover - the ranges always end with an empty one

    def join(self, outcome: RangeOutcome) -> None:
        """Replay a checked range: its seam, the tree over its leaves, the checkpoints."""
        chain, nodes = self.chain, outcome.nodes
        try:
            chain.check_seam(outcome.first_prev, outcome.first_recorded_at)
        except ChainBrokenError as exc:
            raise _fail(exc.reason, seq=exc.seq) from None
        hashes = outcome.leaf_hashes
        for offset in range(0, len(hashes), HASH_SIZE):
            seq = chain.size
            for level, idx, expected in chain.append(hashes[offset : offset + HASH_SIZE])[1:]:
                if nodes.pop((level, idx), None) != expected:
                    raise _fail(
                        f"stored subtree hash ({level}, {idx}) is wrong or missing", seq=seq
                    )
            while self.next_checkpoint is not None and self.next_checkpoint.tree_size == seq + 1:
                self.checkpoint(self.next_checkpoint)
                self.next_checkpoint = next(self.checkpoints, None)
        chain.end_segment(outcome.last_recorded_at)
        self.report.payloads_present += outcome.payloads_present
        self.report.payloads_purged += outcome.payloads_purged
        if outcome.problem is not None:
            raise _FoundProblemError(outcome.problem)
        if nodes:
            level, idx = min(nodes)
            raise _fail(f"unexpected stored subtree hash ({level}, {idx})", seq=outcome.lo)

    def checkpoint(self, stored: StoredCheckpoint) -> None:
        try:
            parsed = verify_checkpoint(stored.note, self.verifier)
        except CheckpointError as exc:
            raise _fail(str(exc), checkpoint=stored.tree_size) from None
        if parsed.size != stored.tree_size or parsed.root_hash != stored.root_hash:
            raise _fail("stored columns differ from the signed note", checkpoint=stored.tree_size)
        if parsed.root_hash != self.chain.root():
            raise _fail(
                "signed root differs from the root of the log at that size",
                checkpoint=stored.tree_size,
            )
        self.report.checkpoints += 1

    def finish(self, keys: KeyProvider | None) -> None:
        head = self.head()
        for _ in range(CATCH_UP_ROUNDS):
            # Entries appended while we read move the head in the same transaction: verify them
            # too, rather than take the head for one whose tail was removed. A real removal
            # shows as no progress.
            if head.size <= self.chain.size:
                break
            before = self.chain.size
            self.entries(self.progress)
            if self.chain.size == before:
                break
            head = self.head()
        size = self.chain.size
        if self.next_checkpoint is not None:
            raise _fail(
                f"checkpoint covers {self.next_checkpoint.tree_size} entries but the log has "
                f"{size}: entries were removed from the tail",
                checkpoint=self.next_checkpoint.tree_size,
            )
        if head.size != size:
            raise _fail(f"ledger head says {head.size} entries, the log has {size}", seq=size)
        expected_last = bytes.fromhex(self.chain.last_leaf_hex) if size else None
        if (
            head.frontier.hashes != self.chain.tree.hashes
            or head.last_leaf_hash != expected_last
            or head.last_recorded_at != self.chain.last_recorded_at
        ):
            raise _fail("ledger head differs from the replayed log", seq=max(size - 1, 0))
        # Only the rows of the entries verified: appends may land meanwhile, and retention may
        # purge a payload already counted as present (so fewer rows is not a problem).
        counts = self.store.count_rows(below=size)
        if counts["tree_nodes"] != size - size.bit_count():
            raise _fail("extra or missing stored subtree hashes")
        if counts["payloads"] > self.report.payloads_present:
            raise _fail("payload rows that belong to no entry")
        orphans = {name: n for name, n in self.store.orphans().items() if n}
        if orphans:
            raise _fail(f"rows that belong to no entry: {sorted(orphans)}")
        self.report.size = size
        self.report.root = self.chain.root().hex()
        self.keys(keys)
        if keys is not None:
            self.operation_records(keys, size)

    def head(self) -> Head:
        try:
            return self.store.head()
        except DatabaseUnavailableError:
            raise
        except (StorageError, ProofError) as exc:  # row missing, or its size and edge disagree
            raise _fail(f"ledger head row is unusable ({exc})", seq=self.chain.size) from None

    def keys(self, provider: KeyProvider | None) -> None:
        destroyed_by: dict[int, str] = {}
        for stored in self.store.iter_keys():
            if stored.wrapped is None:
                if stored.destroyed_by_seq is None:
                    raise _fail("destroyed with no recording entry", key_id=stored.key_id)
                destroyed_by[stored.destroyed_by_seq] = stored.key_id
            elif provider is not None:
                try:
                    provider.unwrap(stored.key_id, stored.wrapped, stored.kek_id)
                except CryptoError as exc:
                    raise _fail(str(exc), key_id=stored.key_id) from None
            self.report.keys_checked += 1
        kinds = self.store.kinds_of(sorted(destroyed_by))
        for seq, key_id in destroyed_by.items():
            category, event_type = kinds.get(seq, ("", ""))
            if category != LEDGER_OPERATIONS or event_type not in PURGE_OPERATION.values():
                raise _fail(
                    "destruction record is not a retention run or erasure entry", key_id=key_id
                )

    def operation_records(self, provider: KeyProvider, size: int) -> None:
        """Each purged payload and destroyed key is one that its retention run or erasure
        recorded, under the category it recorded it for: the operation's own data (sealed in
        the log like any payload) lists the seq ranges it purged and the keys it destroyed.
        A purge record that pins a deletion on an unrelated operation is caught here."""
        destroyed: dict[int, dict[str, str]] = defaultdict(dict)
        for op_seq, key_id, category in self.store.destroyed_keys():
            destroyed[op_seq][key_id] = category
        # Closed on a problem too: the rows stream through a server-side cursor.
        with contextlib.closing(self.store.purges_by_operation(size)) as purges:
            for op_seq, rows in itertools.groupby(purges, key=lambda row: row[0]):
                purged, keys = self._recorded(provider, op_seq, size)
                count = 0
                for _, seq, category in rows:
                    if purged.get(seq) != category:
                        raise _fail(f"payload purge not recorded by entry {op_seq}", seq=seq)
                    count += 1
                if count != len(purged):
                    raise _fail("recorded purges that did not happen", seq=op_seq)
                self._check_destroyed(op_seq, destroyed.pop(op_seq, {}), keys)
        for op_seq, actual in destroyed.items():  # destructions without purges
            self._check_destroyed(op_seq, actual, self._recorded(provider, op_seq, size)[1])

    @staticmethod
    def _check_destroyed(op_seq: int, actual: dict[str, str], recorded: dict[str, str]) -> None:
        for key_id, category in actual.items():
            if recorded.get(key_id) != category:
                raise _fail(f"key destruction not recorded by entry {op_seq}", key_id=key_id)

    def _recorded(
        self, provider: KeyProvider, op_seq: int, size: int
    ) -> tuple[dict[int, str], dict[str, str]]:
        """What operation ``op_seq`` recorded: purged seqs (below ``size``) and destroyed keys,
        each with its category."""
        data = self._operation_data(provider, op_seq)
        purged: dict[int, str] = {}
        keys: dict[str, str] = {}
        categories = data.get("categories")
        if not isinstance(categories, dict):
            raise _fail("operation record lists no categories", seq=op_seq)
        for category, outcome in categories.items():
            ranges = outcome.get("seq_ranges") if isinstance(outcome, dict) else None
            destroyed = outcome.get("keys_destroyed") if isinstance(outcome, dict) else None
            if not isinstance(ranges, list) or not isinstance(destroyed, list):
                raise _fail("operation record is malformed", seq=op_seq)
            for pair in ranges:
                if not (
                    isinstance(pair, list)
                    and len(pair) == 2
                    and all(type(n) is int for n in pair)
                    and 0 <= pair[0] <= pair[1] < op_seq
                ):
                    raise _fail("operation record is malformed", seq=op_seq)
                for seq in range(pair[0], min(pair[1] + 1, size)):
                    purged[seq] = category
            keys.update((str(k), category) for k in destroyed)
        return purged, keys

    def _operation_data(self, provider: KeyProvider, op_seq: int) -> dict[str, Any]:
        entry = self.store.entry(op_seq)
        if entry is None or entry.payload is None or entry.key_id is None:
            raise _fail("operation entry or its record is missing", seq=op_seq)
        stored = self.store.keys_by_id([entry.key_id]).get(entry.key_id)
        if stored is None or stored.wrapped is None:
            raise _fail("operation record's data key is missing", seq=op_seq)
        try:
            key = provider.unwrap(stored.key_id, stored.wrapped, stored.kek_id)
            aad = payload_aad(entry.category, entry.event_id, key.key_id)
            data = json.loads(key.open(entry.payload, aad))
        except (CryptoError, ValueError):
            raise _fail("operation record cannot be opened", seq=op_seq) from None
        if not isinstance(data, dict):
            raise _fail("operation record is malformed", seq=op_seq)
        return data


#: ``ranges(start, chunk)``: outcomes of ``check_range`` for ``[start, start + chunk)``, the
#: next chunk and so on, in order, up to and including the first empty one.
RangeChecker = Callable[[int, int], Iterator[RangeOutcome]]


def _ranges_in_process(store: Store) -> RangeChecker:
    def ranges(start: int, chunk: int) -> Iterator[RangeOutcome]:
        for lo in itertools.count(start, chunk):
            outcome = check_range(store, lo, lo + chunk)
            yield outcome
            if outcome.first_seq is None:
                return

    return ranges


def _ranges_in_workers(pool: WorkerPool) -> RangeChecker:
    def ranges(start: int, chunk: int) -> Iterator[RangeOutcome]:
        tasks = ((lo, lo + chunk) for lo in itertools.count(start, chunk))
        for outcome in pool.map(tasks):
            yield outcome
            if outcome.first_seq is None:
                return

    return ranges


def verify_ledger(
    store: Store,
    verifier: Verifier,
    *,
    keys: KeyProvider | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: int = 5000,
    jobs: int = 1,
    database_url: str | None = None,
) -> VerifyReport:
    """Verify everything stored; the report's ``problem`` names the first inconsistency.

    ``keys`` (optional) also checks that every live wrapped data key still unwraps; an auditor
    without the KEK verifies everything else. With ``jobs`` > 1 (and the ``database_url`` the
    worker processes connect to), ranges of entries are checked in that many processes while
    this one replays the chain, the tree and the checkpoints in order: same checks, same first
    problem, several cores.
    """
    pool = None
    ranges = _ranges_in_process(store)
    if jobs > 1 and database_url is not None:
        from audit_ledger.ledger.workers import WorkerPool  # noqa: PLC0415 - it imports us

        pool = WorkerPool("verify", {"database_url": database_url}, jobs)
        ranges = _ranges_in_workers(pool)
    run = _Run(store, verifier, chunk, ranges)
    try:
        run.entries(progress)
        run.finish(keys)
    except _FoundProblemError as failed:
        run.report.problem = failed.problem
        run.report.size = run.chain.size
    finally:
        if pool is not None:
            pool.close()
    return run.report
