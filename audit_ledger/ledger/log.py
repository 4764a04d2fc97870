"""The log as auditors see it: size, leaves, proofs and signed checkpoints (DESIGN §3, §4).

Proofs come from the stored subtree hashes (RFC 9162 §2.1.3, §2.1.4), passed into the pure tree
code as a hash reader. Checkpoints are C2SP tlog-checkpoint signed notes; a signature is never
put on a root the stored tree does not support. A read of leaves is recorded like any read.
"""

from __future__ import annotations

from audit_ledger.core import merkle
from audit_ledger.core.checkpoint import Checkpoint, Verifier
from audit_ledger.core.merkle import tree_root
from audit_ledger.core.timestamps import format_timestamp
from audit_ledger.crypto.checkpoint_keys import CheckpointKeys
from audit_ledger.crypto.keys import CheckpointSigner
from audit_ledger.errors import StorageError
from audit_ledger.ledger.identity import Principal
from audit_ledger.ledger.operations import Clock, bad
from audit_ledger.ledger.reads import Reads
from audit_ledger.ledger.replica import ReadSource
from audit_ledger.storage import jobs
from audit_ledger.storage.checkpoints import StoredCheckpoint
from audit_ledger.storage.store import Store

#: Leaves per page of ``GET /v1/log/leaves`` (DESIGN §4).
LEAVES_PAGE = 1000


def create_checkpoint(
    store: Store, signer: CheckpointSigner | CheckpointKeys
) -> StoredCheckpoint | None:
    """Sign and store a checkpoint for the current log size; None for an empty log.

    If the latest checkpoint already covers this size it is returned unchanged. The root is
    taken from the head's right edge *and* recomputed from the stored subtree hashes: a signature
    is never put on a root the stored tree does not support.
    """
    with store.writer() as tx:
        head = tx.head()
        if head.size == 0:
            return None
        root = head.frontier.root()
        stored_root = tree_root(head.size, tx.read_hashes)
        if stored_root != root:
            raise StorageError("stored tree hashes disagree with the ledger head; run verify")
        note = signer.sign_checkpoint(Checkpoint(signer.name, head.size, root))
        checkpoint = StoredCheckpoint(head.size, root, note)
        if not tx.insert_checkpoint(checkpoint):
            existing = tx.checkpoint(head.size)
            if existing is not None:
                return existing
        return checkpoint


class Log:
    """Size, leaves, inclusion and consistency proofs, checkpoints."""

    def __init__(
        self,
        store: Store,
        signer: CheckpointSigner | CheckpointKeys,
        reads: Reads,
        clock: Clock,
        source: ReadSource[Store] | None = None,
    ) -> None:
        self.store = store
        self.source: ReadSource[Store] = source if source is not None else ReadSource(store)
        self.signer = signer
        self.reads = reads
        self.clock = clock

    def size(self) -> int:
        return self.store.size()

    def leaves(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """Up to :data:`LEAVES_PAGE` leaves from ``start``, unrecorded (see :meth:`read_leaves`)."""

        def read(store: Store) -> list[tuple[int, bytes]]:
            size = store.size()
            if not 0 <= start < end <= size:
                raise bad("end", f"need 0 <= start < end <= log size ({size})")
            return store.leaves(start, min(end, start + LEAVES_PAGE))

        return self.source.run(end, read)

    def read_leaves(
        self, principal: Principal, start: int, end: int, endpoint: str
    ) -> list[tuple[int, bytes]]:
        """:meth:`leaves` for a caller, recorded as a read."""
        rows = self.leaves(start, end)
        self.reads.record(principal, endpoint, [seq for seq, _ in rows])
        return rows

    def inclusion_proof(self, seq: int, tree_size: int) -> list[bytes]:
        def read(store: Store) -> list[bytes]:
            size = store.size()
            if not 0 <= seq < tree_size <= size:
                raise bad("tree_size", f"need 0 <= seq < tree_size <= log size ({size})")
            return merkle.inclusion_proof(seq, tree_size, store.read_hashes)

        return self.source.run(tree_size, read)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        def read(store: Store) -> list[bytes]:
            size = store.size()
            if not 1 <= first <= second <= size:
                raise bad("second", f"need 1 <= first <= second <= log size ({size})")
            return merkle.consistency_proof(first, second, store.read_hashes)

        return self.source.run(second, read)

    def root(self, tree_size: int) -> bytes:
        return self.source.run(
            tree_size, lambda store: merkle.tree_root(tree_size, store.read_hashes)
        )

    def checkpoint(self) -> StoredCheckpoint | None:
        """Sign a checkpoint of the current log (None for an empty log) and note when."""
        before = self.store.latest_checkpoint()
        made = create_checkpoint(self.store, self.signer)
        if made is not None and (before is None or made.tree_size > before.tree_size):
            when = format_timestamp(self.clock())
            jobs.record_run(self.store, "checkpoint_signed", made.tree_size, when, "signed")
        return made

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        return self.store.latest_checkpoint()

    def cosigned_checkpoint(self) -> str | None:
        """The latest checkpoint note with every witness cosignature stored for it (None for
        none yet): log signature(s) first, then the cosignature lines (tlog-cosignature). The
        one place that assembles the served checkpoint (``/v1/log/checkpoint``, ``/tlog/``)."""
        latest = self.published_checkpoint()
        return None if latest is None else self.cosigned_note(latest)

    def cosigned_note(self, checkpoint: StoredCheckpoint) -> str:
        """``checkpoint``'s note with every witness cosignature stored for it appended."""
        lines = self.store.cosignatures(checkpoint.tree_size)
        return checkpoint.note + "".join(c.line for c in lines)

    def published_checkpoint(self) -> StoredCheckpoint | None:
        """What ``GET /v1/log/checkpoint`` serves: the latest checkpoint, or — for a log that
        has entries but no checkpoint yet — one signed now, so that readers need not wait for
        the scheduler's first tick. None only for an empty log (DESIGN §3: no checkpoint then).

        Race-free: :func:`create_checkpoint` signs under the head lock and stores one
        checkpoint per size, so concurrent first readers get the same one. Only the first
        checkpoint is made this way; later ones stay the scheduler's (a read never pays for a
        signature once one exists).
        """
        latest = self.store.latest_checkpoint()
        if latest is None and self.size() > 0:
            return self.checkpoint()
        return latest

    def verifier_key(self) -> str:
        return self.signer.verifier.encode()

    def key_history(self) -> list[Verifier]:
        """Every checkpoint key signed with so far, oldest first (checkpoint-key rotation)."""
        if isinstance(self.signer, CheckpointKeys):
            return self.signer.history()
        return [self.signer.verifier]
