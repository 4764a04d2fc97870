"""Full verification of a stored ledger, streaming in seq order with constant memory.

Checks, in one pass: every leaf parses and re-encodes to its stored bytes; seq is contiguous from
0; ``prev`` links; ``recorded_at`` never decreases; the indexed columns and refs rows equal the
header; each stored leaf hash and each stored subtree hash equals the recomputed one; every
present payload matches ``payload_sha256``; every missing payload is accounted for by a purge
record naming a later ``ledger_operations`` entry; every stored checkpoint is signed by our key
and its root equals the root recomputed at its size; the head row matches the replay; no rows
are orphaned; every destroyed data key names the entry that recorded its destruction; every
active principal matches the entry that binds it and was not revoked. With the
keys, also: every live data key unwraps, and every purge and key destruction is one that its
retention run or erasure lists in its own sealed record, under the same category.

The first problem found is reported with the seq (or checkpoint size, or key id) and the reason.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import make_url

from audit_ledger.auditor.trust import trust_from
from audit_ledger.core.checkpoint import Verifier
from audit_ledger.core.merkle import HASH_SIZE
from audit_ledger.core.policy import TlogPolicy, key_history_policy
from audit_ledger.core.verify import ChainVerifier
from audit_ledger.crypto.checkpoint_keys import CheckpointKeys
from audit_ledger.crypto.envelope import payload_aad
from audit_ledger.crypto.keys import KeyProvider
from audit_ledger.errors import (
    ChainBrokenError,
    CheckpointError,
    CryptoError,
    DatabaseUnavailableError,
    ProofError,
    StorageError,
)
from audit_ledger.ledger.verify_entries import (
    FoundProblemError,
    Problem,
    RangeOutcome,
    VerifyReport,
    check_range,
    fail,
)
from audit_ledger.ledger.verify_keys import KeyChecks
from audit_ledger.ledger.verify_principals import check_principals
from audit_ledger.ledger.verify_rows import check_forms, check_types
from audit_ledger.ledger.workers import WorkerPool
from audit_ledger.storage.checkpoints import StoredCheckpoint
from audit_ledger.storage.entries import Head
from audit_ledger.storage.store import Store

#: What a malformed stored value can raise in code that expects the right one (a database
#: outage is not among them: it is raised, not reported as tampering).
UNREADABLE = (
    TypeError,
    ValueError,
    AttributeError,
    KeyError,
    IndexError,
    OverflowError,
    CheckpointError,
    ProofError,
)

#: How often verification follows entries appended while it ran before it settles on a size.
CATCH_UP_ROUNDS = 10


def checkpoints_after(store: Store, after: int = -1) -> Iterator[StoredCheckpoint]:
    """Every stored checkpoint larger than ``after``, smallest first, a page at a time."""
    while True:
        page = store.checkpoints(after_size=after, limit=1000)
        if not page:
            return
        yield from page
        after = page[-1].tree_size


class _Run:
    def __init__(
        self,
        store: Store,
        verifier: Verifier | TlogPolicy,
        chunk: int,
        ranges: RangeChecker,
        *,
        parallel: bool = False,
    ) -> None:
        self.store = store
        self.parallel = parallel
        self.key_checks: KeyChecks | None = None
        # A key history (checkpoint-key rotation): each checkpoint needs a signature by one.
        self.policy = key_history_policy([verifier]) if isinstance(verifier, Verifier) else verifier
        self.chunk = chunk
        self.ranges = ranges
        self.chain = ChainVerifier()
        self.report = VerifyReport()
        self.checkpoints: Iterator[StoredCheckpoint] = iter(())
        self.next_checkpoint: StoredCheckpoint | None = None
        self.progress: Callable[[int], None] | None = None

    def start(self, keys: KeyProvider | None = None) -> None:
        """Check the types of the rows read whole, open the stream of checkpoints, and start
        the data-key checks (beside the entries pass when it runs in worker processes)."""
        check_types(self.store)
        self.key_checks = KeyChecks(self.store, keys, background=self.parallel)
        self.checkpoints = checkpoints_after(self.store)
        self.next_checkpoint = next(self.checkpoints, None)

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
                    raise fail(f"missing entry (gap): got {following}", seq=self.chain.size)
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
            raise fail(exc.reason, seq=exc.seq) from None
        hashes = outcome.leaf_hashes
        for offset in range(0, len(hashes), HASH_SIZE):
            seq = chain.size
            for level, idx, expected in chain.append(hashes[offset : offset + HASH_SIZE])[1:]:
                if nodes.pop((level, idx), None) != expected:
                    raise fail(f"stored subtree hash ({level}, {idx}) is wrong or missing", seq=seq)
            while self.next_checkpoint is not None and self.next_checkpoint.tree_size == seq + 1:
                self.checkpoint(self.next_checkpoint)
                self.next_checkpoint = next(self.checkpoints, None)
        chain.end_segment(outcome.last_recorded_at)
        self.report.payloads_present += outcome.payloads_present
        self.report.payloads_purged += outcome.payloads_purged
        if outcome.problem is not None:
            raise FoundProblemError(outcome.problem)
        if nodes:
            level, idx = min(nodes)
            raise fail(f"unexpected stored subtree hash ({level}, {idx})", seq=outcome.lo)

    def checkpoint(self, stored: StoredCheckpoint) -> None:
        try:
            parsed, _ = self.policy.verify_log_signature(stored.note)
        except CheckpointError as exc:
            raise fail(str(exc), checkpoint=stored.tree_size) from None
        if parsed.size != stored.tree_size or parsed.root_hash != stored.root_hash:
            raise fail("stored columns differ from the signed note", checkpoint=stored.tree_size)
        if parsed.root_hash != self.chain.root():
            raise fail(
                "signed root differs from the root of the log at that size",
                checkpoint=stored.tree_size,
            )
        self.report.checkpoints += 1

    def catch_up(self) -> Head:
        """Verify the entries appended while the pass ran, then the head that ends the log;
        a checkpoint left over means entries were removed from the tail."""
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
        if self.next_checkpoint is not None:
            raise fail(
                f"checkpoint covers {self.next_checkpoint.tree_size} entries but the log has "
                f"{self.chain.size}: entries were removed from the tail",
                checkpoint=self.next_checkpoint.tree_size,
            )
        return head

    def finish(self, keys: KeyProvider | None) -> None:
        head = self.catch_up()
        size = self.chain.size
        if head.size != size:
            raise fail(f"ledger head says {head.size} entries, the log has {size}", seq=size)
        expected_last = bytes.fromhex(self.chain.last_leaf_hex) if size else None
        if (
            head.frontier.hashes != self.chain.tree.hashes
            or head.last_leaf_hash != expected_last
            or head.last_recorded_at != self.chain.last_recorded_at
        ):
            raise fail("ledger head differs from the replayed log", seq=max(size - 1, 0))
        # The three whole-table queries run side by side, each on its own connection: they are
        # the server's work (a third of a second at 100k entries, one after the other), and
        # the problems are still raised in this order, the first one first.
        with ThreadPoolExecutor(3, thread_name_prefix="verify-rows") as queries:
            # Only the rows of the entries verified: appends may land meanwhile, and retention
            # may purge a payload already counted as present (so fewer rows is not a problem).
            counted = queries.submit(self.store.count_rows, below=size)
            orphaned = queries.submit(self.store.orphans, below=size)
            foreign = queries.submit(self.store.first_entry_under_foreign_key, below=size)
            counts = counted.result()
            if counts["tree_nodes"] != size - size.bit_count():
                raise fail("extra or missing stored subtree hashes")
            if counts["payloads"] > self.report.payloads_present:
                raise fail("payload rows that belong to no entry")
            orphans = {name: n for name, n in orphaned.result().items() if n}
            if orphans:
                raise fail(f"rows that belong to no entry: {sorted(orphans)}")
            self.report.size = size
            self.report.root = self.chain.root().hex()
            if self.key_checks is None:  # pragma: no cover - start() always runs first
                self.key_checks = KeyChecks(self.store, keys, background=False)
            self.report.keys_checked = self.key_checks.result()
            check_principals(self.store, size)
            check_forms(self.store)
            if (first := foreign.result()) is not None:
                raise fail("entry is sealed under a data key of another category", seq=first)
        if keys is not None:
            self.operation_records(keys, size)

    def head(self) -> Head:
        try:
            return self.store.head()
        except DatabaseUnavailableError:
            raise
        except (StorageError, ProofError) as exc:  # row missing, or its size and edge disagree
            raise fail(f"ledger head row is unusable ({exc})", seq=self.chain.size) from None

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
                        raise fail(f"payload purge not recorded by entry {op_seq}", seq=seq)
                    count += 1
                if count != len(purged):
                    raise fail("recorded purges that did not happen", seq=op_seq)
                self._check_destroyed(op_seq, destroyed.pop(op_seq, {}), keys)
        for op_seq, actual in destroyed.items():  # destructions without purges
            self._check_destroyed(op_seq, actual, self._recorded(provider, op_seq, size)[1])

    @staticmethod
    def _check_destroyed(op_seq: int, actual: dict[str, str], recorded: dict[str, str]) -> None:
        for key_id, category in actual.items():
            if recorded.get(key_id) != category:
                raise fail(f"key destruction not recorded by entry {op_seq}", key_id=key_id)

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
            raise fail("operation record lists no categories", seq=op_seq)
        for category, outcome in categories.items():
            ranges = outcome.get("seq_ranges") if isinstance(outcome, dict) else None
            destroyed = outcome.get("keys_destroyed") if isinstance(outcome, dict) else None
            if not isinstance(ranges, list) or not isinstance(destroyed, list):
                raise fail("operation record is malformed", seq=op_seq)
            for pair in ranges:
                if not (
                    isinstance(pair, list)
                    and len(pair) == 2
                    and all(type(n) is int for n in pair)
                    and 0 <= pair[0] <= pair[1] < op_seq
                ):
                    raise fail("operation record is malformed", seq=op_seq)
                for seq in range(pair[0], min(pair[1] + 1, size)):
                    purged[seq] = category
            keys.update((str(k), category) for k in destroyed)
        return purged, keys

    def _operation_data(self, provider: KeyProvider, op_seq: int) -> dict[str, Any]:
        entry = self.store.entry(op_seq)
        if entry is None or entry.payload is None or entry.key_id is None:
            raise fail("operation entry or its record is missing", seq=op_seq)
        stored = self.store.keys_by_id([entry.key_id]).get(entry.key_id)
        if stored is None or stored.wrapped is None:
            raise fail("operation record's data key is missing", seq=op_seq)
        try:
            key = provider.unwrap(stored.key_id, stored.wrapped, stored.kek_id)
            aad = payload_aad(entry.category, entry.event_id, key.key_id)
            data = json.loads(key.open(entry.payload, aad))
        except (CryptoError, ValueError):
            raise fail("operation record cannot be opened", seq=op_seq) from None
        if not isinstance(data, dict):
            raise fail("operation record is malformed", seq=op_seq)
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
    verifier: Verifier | TlogPolicy,
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
        pool = WorkerPool(
            "verify", {"database_url": database_url}, jobs, release=store.release_connections
        )
        ranges = _ranges_in_workers(pool)
    run = _Run(store, verifier, chunk, ranges, parallel=pool is not None)
    try:
        run.start(keys)
        run.entries(progress)
        run.finish(keys)
    except FoundProblemError as failed:
        run.report.problem = failed.problem
        run.report.size = run.chain.size
    except UNREADABLE as exc:
        # The backstop (issue #12 item 3): the checks above name each malformed value they
        # know; anything a tampered row still slips past them is tampering too, reported where
        # verification stopped — never a traceback instead of a verdict.
        run.report.problem = Problem(
            f"a stored value cannot be read ({exc.__class__.__name__})", seq=run.chain.size
        )
        run.report.size = run.chain.size
    finally:
        if pool is not None:
            pool.close()
    return run.report


def given_trust(keys: Sequence[str], policy_file: str | None) -> TlogPolicy | None:
    """Checkpoint keys given on a command line (``verify --verifier-key … | --policy``), for
    checking stored checkpoints against keys held outside the keys directory; None if none.
    Only the policy's log keys matter here: stored checkpoints carry no witness cosignatures."""
    if not keys and policy_file is None:
        return None
    return trust_from(keys, (), policy_file)


#: Below this size a verify runs in one process: starting workers would cost more than it saves.
PARALLEL_VERIFY_MIN_SIZE = 100_000
MAX_VERIFY_JOBS = 8


class Verification:
    """The verify use case over one database (``audit-ledger verify``, the scheduler)."""

    def __init__(
        self,
        store: Store,
        verifier: Verifier | CheckpointKeys,
        keys: KeyProvider,
        database_url: str,
    ) -> None:
        self.store = store
        self.verifier = verifier
        self.keys = keys
        self.database_url = database_url

    def run(
        self,
        progress: Callable[[int], None] | None = None,
        *,
        jobs: int | None = None,
        trust: TlogPolicy | None = None,
    ) -> VerifyReport:
        """Verify the whole ledger; ``jobs`` processes check entries (None: one per core for
        a log large enough to repay starting them, else this process alone). ``trust``: the
        checkpoint keys to accept (default: the keys directory's key history)."""
        if jobs is None:
            # From the entries, not the head row: verification must work when that is damaged.
            last = self.store.last_seq()
            big = type(last) is int and last + 1 >= PARALLEL_VERIFY_MIN_SIZE
            jobs = min(os.cpu_count() or 1, MAX_VERIFY_JOBS) if big else 1
        parsed = make_url(self.database_url)
        if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
            jobs = 1  # an in-memory database cannot be opened by another process
        if trust is None:
            trust = (
                self.verifier.history_policy()
                if isinstance(self.verifier, CheckpointKeys)
                else key_history_policy([self.verifier])
            )
        return verify_ledger(
            self.store,
            trust,
            keys=self.keys,
            progress=progress,
            jobs=jobs,
            database_url=self.database_url,
        )
