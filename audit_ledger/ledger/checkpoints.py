"""Signed checkpoints of the current tree (C2SP tlog-checkpoint, DESIGN §3)."""

from __future__ import annotations

from audit_ledger.core.checkpoint import Checkpoint
from audit_ledger.core.merkle import tree_root
from audit_ledger.crypto.keys import CheckpointSigner
from audit_ledger.errors import StorageError
from audit_ledger.storage.checkpoints import StoredCheckpoint
from audit_ledger.storage.store import Store


def create_checkpoint(store: Store, signer: CheckpointSigner) -> StoredCheckpoint | None:
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
