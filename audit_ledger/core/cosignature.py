"""Witness cosignatures: C2SP tlog-cosignature v1 with Ed25519 (DESIGN §7).

A cosignature is a signed-note signature line on a checkpoint, by a *cosigner* (a witness):

* key ID = SHA-256(name || "\\n" || 0x04 || 32-byte Ed25519 public key)[:4];
* signed message = ``cosignature/v1\\n`` || ``time <unix seconds>\\n`` || the checkpoint body
  (with its final newline, without signature lines);
* signature blob = key ID || 8-byte big-endian timestamp || 64-byte Ed25519 signature.

The verifier key is published as ``<name>+<8 hex key ID>+<base64(0x04 || public key)>``.
Signing is done by a function passed in, so this module holds no private key.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit_ledger.core.checkpoint import (
    NoteSignature,
    check_key_name,
    parse_vkey,
    split_note,
    typed_key_hash,
)
from audit_ledger.errors import CheckpointError

ALG_COSIGNATURE_V1 = 0x04
_MAX_TIMESTAMP = 2**63 - 1
_BLOB_SIZE = 4 + 8 + 64


def cosignature_message(body: str, timestamp: int) -> bytes:
    """The bytes an Ed25519 v1 cosigner signs for checkpoint ``body`` at ``timestamp``."""
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise CheckpointError("cosignature timestamp is out of range")
    if not body.endswith("\n"):
        raise CheckpointError("checkpoint body must end with a newline")
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A verified (or freshly made) cosignature by one cosigner."""

    name: str
    key_hash: bytes
    timestamp: int
    signature: bytes

    def note_signature(self) -> NoteSignature:
        blob = self.key_hash + self.timestamp.to_bytes(8, "big") + self.signature
        return NoteSignature(self.name, blob)

    def line(self) -> str:
        """The note signature line, newline included."""
        return self.note_signature().line()


@dataclass(frozen=True, slots=True)
class CosignerKey:
    """A cosigner's (witness's) verifier key: name, key ID and Ed25519 public key."""

    name: str
    key_hash: bytes
    public_key: bytes

    def encode(self) -> str:
        """``<name>+<8 hex key ID>+<base64(0x04 || public key)>``."""
        blob = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_hash.hex()}+{blob}"

    def matches(self, sig: NoteSignature) -> bool:
        """True when a note signature line claims to be by this cosigner (name and key ID)."""
        return sig.name == self.name and sig.key_hash == self.key_hash

    def verify(self, body: str, sig: NoteSignature) -> Cosignature:
        """Check a signature line of this cosigner over checkpoint ``body``."""
        if not self.matches(sig):
            raise CheckpointError("signature is not by this cosigner")
        if len(sig.blob) != _BLOB_SIZE:
            raise CheckpointError("cosignature has the wrong length")
        timestamp = int.from_bytes(sig.blob[4:12], "big")
        signature = sig.blob[12:]
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(
                signature, cosignature_message(body, timestamp)
            )
        except InvalidSignature:
            raise CheckpointError("cosignature does not verify") from None
        return Cosignature(self.name, self.key_hash, timestamp, signature)


def make_cosigner_key(name: str, public_key: bytes) -> CosignerKey:
    """Cosigner verifier key for a raw 32-byte Ed25519 public key under ``name``."""
    check_key_name(name)
    if len(public_key) != 32:
        raise CheckpointError("Ed25519 public key must be 32 bytes")
    return CosignerKey(name, typed_key_hash(name, ALG_COSIGNATURE_V1, public_key), public_key)


def parse_cosigner_key(text: str) -> CosignerKey:
    """Parse a type-0x04 verifier key; its key ID must match the name and key."""
    name, alg, public_key = parse_vkey(text)
    if alg != ALG_COSIGNATURE_V1 or len(public_key) != 32:
        raise CheckpointError("verifier key is not an Ed25519 cosignature/v1 key")
    return make_cosigner_key(name, public_key)


def cosign(
    body: str, key: CosignerKey, sign: Callable[[bytes], bytes], timestamp: int
) -> Cosignature:
    """Cosign checkpoint ``body`` at ``timestamp`` with ``sign`` (Ed25519 over the message)."""
    signature = sign(cosignature_message(body, timestamp))
    cosignature = Cosignature(key.name, key.key_hash, timestamp, signature)
    key.verify(body, cosignature.note_signature())  # the signer must match the key
    return cosignature


def verified_cosignatures(note: str, keys: Iterable[CosignerKey]) -> list[Cosignature]:
    """The cosignatures in ``note`` that verify under one of ``keys``.

    Lines by unknown keys are ignored (signed-note). A line that claims a known key's name and
    key ID but does not verify is an error: it can only be a forgery or corruption.
    """
    text, signatures = split_note(note)
    found = []
    for key in keys:
        for sig in signatures:
            if key.matches(sig):
                found.append(key.verify(text, sig))
    return found
