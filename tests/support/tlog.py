"""An in-memory signed log for witness tests: leaves, checkpoints signed by a test key, and
consistency proofs from :mod:`audit_ledger.core.merkle` (the same code the ledger serves)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit_ledger.core import merkle
from audit_ledger.core.checkpoint import Checkpoint, Verifier, make_verifier, sign_note
from audit_ledger.core.tlog_witness import format_add_checkpoint


class MemoryLog:
    """A log of random leaves under ``origin``, signed with its own (or a given) Ed25519 key."""

    def __init__(self, origin: str, private: Ed25519PrivateKey | None = None) -> None:
        self.origin = origin
        self.private = private or Ed25519PrivateKey.generate()
        self.verifier: Verifier = make_verifier(
            origin, self.private.public_key().public_bytes_raw()
        )
        self.stored: dict[tuple[int, int], bytes] = {}
        self.compact = merkle.CompactRange()
        self.size = 0

    def append(self, count: int) -> None:
        for _ in range(count):
            for level, index, h in self.compact.append(merkle.leaf_hash(os.urandom(16))):
                self.stored[(level, index)] = h
            self.size += 1

    def _read(self, indexes: Sequence[tuple[int, int]]) -> list[bytes]:
        return [self.stored[i] for i in indexes]

    def root(self, size: int) -> bytes:
        return merkle.tree_root(size, self._read)

    def body(self, size: int) -> str:
        return Checkpoint(self.origin, size, self.root(size)).body()

    def note(self, size: int) -> str:
        return sign_note(self.body(size), self.verifier, self.private.sign)

    def proof(self, old: int, new: int) -> list[bytes]:
        if old in (0, new):
            return []
        return merkle.consistency_proof(old, new, self._read)

    def request(self, old: int, new: int) -> bytes:
        """An add-checkpoint body from ``old`` to ``new`` with a correct proof."""
        return format_add_checkpoint(old, self.proof(old, new), self.note(new))
