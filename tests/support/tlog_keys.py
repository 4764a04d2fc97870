"""Throwaway log keys, witnesses and cosigned checkpoints for tests of proof bundles and
tlog-policies: real Ed25519 keys, signed with :mod:`audit_ledger.core` (no mocks)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit_ledger.core.checkpoint import (
    Checkpoint,
    Verifier,
    join_note,
    make_verifier,
    sign_note,
    split_note,
)
from audit_ledger.core.cosignature import CosignerKey, cosign, make_cosigner_key


@dataclass
class LogKey:
    private: Ed25519PrivateKey
    verifier: Verifier

    def sign(self, checkpoint: Checkpoint) -> str:
        return sign_note(checkpoint.body(), self.verifier, self.private.sign)


@dataclass
class Witness:
    private: Ed25519PrivateKey
    key: CosignerKey

    def cosign(self, note: str, timestamp: int = 1_700_000_000) -> str:
        """``note`` with this witness's cosignature line appended (``join_note``)."""
        text, signatures = split_note(note)
        cosignature = cosign(text, self.key, self.private.sign, timestamp)
        return join_note(text, [*signatures, cosignature.note_signature()])


def log_key(origin: str) -> LogKey:
    private = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
    return LogKey(private, make_verifier(origin, private.public_key().public_bytes_raw()))


def witness(name: str) -> Witness:
    private = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
    return Witness(private, make_cosigner_key(name, private.public_key().public_bytes_raw()))


def add_signature(note: str, key: LogKey) -> str:
    """``note`` also signed by log key ``key`` (a rotation's second log signature)."""
    text, signatures = split_note(note)
    _, extra = split_note(sign_note(text, key.verifier, key.private.sign))
    return join_note(text, [*signatures, *extra])
